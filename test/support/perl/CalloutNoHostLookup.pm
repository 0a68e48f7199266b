# NAME
#   CalloutNoHostLookup - keeps swaks from looking the machine's name up in DNS
#
# DESCRIPTION
#   test/support/postfix.ts loads this into swaks (PERL5LIB, PERL5OPT=-MCalloutNoHostLookup).
#   swaks calls gethostbyname(hostname()) on every run, even when --helo and --from make the
#   answer unneeded; where /etc/hosts lacks the machine's name, that is a query to the
#   machine's resolver, off loopback. Perl's gethostbyname, replaced before swaks is compiled,
#   finds nothing, so swaks keeps the plain name (its Message-Id takes it).
package CalloutNoHostLookup;

use strict;
use warnings;

BEGIN {
  *CORE::GLOBAL::gethostbyname = sub { return; };
}

1;
