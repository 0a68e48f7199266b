import { prvsSign } from '../src/rewrite/batv.js';
console.log(prvsSign('alice@example.com', { keynum: 1, secret: 'secret' }, Date.parse('2020-01-01T00:01:00Z')));
import { findEnhancedStatus } from '../src/bounce/status.js';
console.log(findEnhancedStatus('ends with 4.2.2.'), findEnhancedStatus('host 192.5.1.1 said no'));
