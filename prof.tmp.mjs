// src/checks/spf/evaluate.ts
import { domainToASCII } from "node:url";

// src/core/clock.ts
var systemClock = { now: () => Date.now() };

// src/core/errors.ts
var CalloutError = class extends Error {
  code;
  constructor(code, message, options) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
};

// src/core/ip.ts
var MAX_TEXT_LENGTH = 64;
var MAPPED_PREFIX = 0xffffn;
function familyWidth(family) {
  return family === 4 ? 32 : 128;
}
function prefixMask(family, prefixLength) {
  const width = familyWidth(family);
  return (1n << BigInt(prefixLength)) - 1n << BigInt(width - prefixLength);
}
function parseIpv4Bits(text) {
  const octets = text.split(".");
  if (octets.length !== 4) return void 0;
  let bits = 0n;
  for (const octet of octets) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(octet)) return void 0;
    const value = Number(octet);
    if (value > 255) return void 0;
    bits = bits << 8n | BigInt(value);
  }
  return bits;
}
function parseIpv6Groups(text, allowTrailingIpv4) {
  if (text === "") return [];
  const parts = text.split(":");
  const groups = [];
  for (const [index, part] of parts.entries()) {
    if (allowTrailingIpv4 && index === parts.length - 1 && part.includes(".")) {
      const ipv4 = parseIpv4Bits(part);
      if (ipv4 === void 0) return void 0;
      groups.push(Number(ipv4 >> 16n), Number(ipv4 & 0xffffn));
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return void 0;
      groups.push(parseInt(part, 16));
    }
  }
  return groups;
}
function parseIpv6Bits(text) {
  const halves = text.split("::");
  if (halves.length > 2) return void 0;
  let groups;
  if (halves.length === 2) {
    const head = parseIpv6Groups(halves[0] ?? "", false);
    const tail = parseIpv6Groups(halves[1] ?? "", true);
    if (head === void 0 || tail === void 0) return void 0;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return void 0;
    groups = [...head, ...new Array(missing).fill(0), ...tail];
  } else {
    const all = parseIpv6Groups(text, true);
    if (all === void 0 || all.length !== 8) return void 0;
    groups = all;
  }
  let bits = 0n;
  for (const group of groups) bits = bits << 16n | BigInt(group);
  return bits;
}
function parseIp(text) {
  if (text.length === 0 || text.length > MAX_TEXT_LENGTH) return void 0;
  if (text.includes(":")) {
    const bits2 = parseIpv6Bits(text);
    return bits2 === void 0 ? void 0 : { family: 6, bits: bits2 };
  }
  const bits = parseIpv4Bits(text);
  return bits === void 0 ? void 0 : { family: 4, bits };
}
function unmapped(address) {
  if (address.family === 6 && address.bits >> 32n === MAPPED_PREFIX) {
    return { family: 4, bits: address.bits & 0xffffffffn };
  }
  return address;
}
function formatIpv4Bits(bits) {
  return [24n, 16n, 8n, 0n].map((shift) => String(bits >> shift & 0xffn)).join(".");
}
function formatIp(address) {
  if (address.family === 4) return formatIpv4Bits(address.bits);
  if (address.bits >> 32n === MAPPED_PREFIX) return `::ffff:${formatIpv4Bits(address.bits & 0xffffffffn)}`;
  const groups = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number(address.bits >> shift & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}
function parseCidr(text) {
  if (text.length > MAX_TEXT_LENGTH) return { ok: false, reason: `longer than ${MAX_TEXT_LENGTH} characters` };
  const slash = text.indexOf("/");
  let addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? void 0 : text.slice(slash + 1);
  const bracketed = /^\[(.*)\]$/.exec(addressText);
  if (bracketed) addressText = bracketed[1] ?? "";
  const address = parseIp(addressText);
  if (address === void 0 || bracketed && address.family !== 6) {
    return { ok: false, reason: `not an IPv4 or IPv6 address: ${JSON.stringify(addressText)}` };
  }
  const width = familyWidth(address.family);
  let prefixLength = width;
  if (prefixText !== void 0) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > width) {
      return { ok: false, reason: `prefix length must be 0 to ${width}: ${JSON.stringify(prefixText)}` };
    }
    prefixLength = Number(prefixText);
  }
  if (address.family === 6 && prefixLength >= 96 && address.bits >> 32n === MAPPED_PREFIX) {
    const ipv4 = unmapped(address);
    const ipv4Prefix = prefixLength - 96;
    return { ok: true, value: { family: 4, prefixLength: ipv4Prefix, network: ipv4.bits & prefixMask(4, ipv4Prefix) } };
  }
  return {
    ok: true,
    value: { family: address.family, prefixLength, network: address.bits & prefixMask(address.family, prefixLength) }
  };
}
function builtinCidr(text) {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new CalloutError("INTERNAL", `bad built-in CIDR ${text}: ${parsed.reason}`);
  return parsed.value;
}
function specialTable(entries) {
  const table = entries.map(([text, addressClass]) => ({ cidr: builtinCidr(text), class: addressClass }));
  return table.sort((a, b) => b.cidr.prefixLength - a.cidr.prefixLength);
}
var IPV4_SPECIAL = specialTable([
  ["0.0.0.0/8", "reserved"],
  ["0.0.0.0/32", "unspecified"],
  ["10.0.0.0/8", "private"],
  ["100.64.0.0/10", "shared"],
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link-local"],
  ["172.16.0.0/12", "private"],
  ["192.0.0.0/24", "reserved"],
  ["192.0.0.9/32", "public"],
  ["192.0.0.10/32", "public"],
  ["192.0.2.0/24", "documentation"],
  ["192.88.99.0/24", "reserved"],
  ["192.168.0.0/16", "private"],
  ["198.18.0.0/15", "benchmark"],
  ["198.51.100.0/24", "documentation"],
  ["203.0.113.0/24", "documentation"],
  ["224.0.0.0/4", "multicast"],
  ["240.0.0.0/4", "reserved"],
  ["255.255.255.255/32", "reserved"]
]);
var IPV6_SPECIAL = specialTable([
  ["::/128", "unspecified"],
  ["::1/128", "loopback"],
  ["64:ff9b:1::/48", "private"],
  ["100::/64", "reserved"],
  ["2001::/23", "reserved"],
  ["2001:1::1/128", "public"],
  ["2001:1::2/128", "public"],
  ["2001:1::3/128", "public"],
  ["2001:2::/48", "benchmark"],
  ["2001:3::/32", "public"],
  ["2001:4:112::/48", "public"],
  ["2001:20::/28", "public"],
  ["2001:30::/28", "public"],
  ["2001:db8::/32", "documentation"],
  ["3fff::/20", "documentation"],
  ["fc00::/7", "private"],
  ["fe80::/10", "link-local"],
  ["ff00::/8", "multicast"]
]);
var NAT64_WELL_KNOWN = builtinCidr("64:ff9b::/96");
var SIX_TO_FOUR = builtinCidr("2002::/16");
var GLOBAL_UNICAST = builtinCidr("2000::/3");

// src/checks/client-ip.ts
function clientAddress(ip) {
  if (ip.includes("/") || ip.startsWith("[")) return void 0;
  const host = parseCidr(ip);
  if (!host.ok) return void 0;
  return { text: formatIp({ family: host.value.family, bits: host.value.network }), family: host.value.family, host: host.value };
}
function networkHolds(network, client) {
  if (network.family !== client.family) return false;
  const shift = BigInt((client.family === 4 ? 32 : 128) - network.prefixLength);
  return client.host.network >> shift === network.network >> shift;
}
function addressHolds(address, prefixLength, client) {
  const parsed = parseIp(address);
  if (parsed === void 0 || parsed.family !== client.family) return false;
  const shift = BigInt((client.family === 4 ? 32 : 128) - prefixLength);
  return client.host.network >> shift === parsed.bits >> shift;
}

// src/dns/reverse.ts
import { isIPv4, isIPv6 } from "node:net";
function reverseName(ip) {
  if (isIPv4(ip)) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
  const withoutZone = ip.split("%")[0] ?? "";
  if (isIPv6(withoutZone)) {
    const nibbles2 = ipv6Groups(withoutZone).map((group) => group.toString(16).padStart(4, "0")).join("");
    return `${[...nibbles2].reverse().join(".")}.ip6.arpa`;
  }
  throw new CalloutError("DNS_PERMANENT", `not an IP address, no reverse name: ${JSON.stringify(ip)}`);
}
function ipv6Groups(ip) {
  const [head = "", tail] = ip.split("::");
  const parse = (part) => part === "" ? [] : part.split(":").flatMap((field) => field.includes(".") ? dottedQuadGroups(field) : [parseInt(field, 16)]);
  const front = parse(head);
  const back = tail === void 0 ? [] : parse(tail);
  const zeros = new Array(8 - front.length - back.length).fill(0);
  return [...front, ...zeros, ...back];
}
function dottedQuadGroups(quad) {
  const [a = 0, b = 0, c = 0, d = 0] = quad.split(".").map(Number);
  return [a << 8 | b, c << 8 | d];
}

// src/checks/spf/lookups.ts
var SpfLookups = class {
  constructor(resolver, limits, clock, trace) {
    this.resolver = resolver;
    this.limits = limits;
    this.clock = clock;
    this.trace = trace;
    this.startedAt = clock.now();
  }
  resolver;
  limits;
  clock;
  trace;
  dnsTerms = 0;
  voidLookups = 0;
  startedAt;
  /** Counts one DNS-querying term; the problem when it is one too many. */
  countTerm() {
    this.dnsTerms += 1;
    return this.dnsTerms > this.limits.dnsTerms ? `more than ${this.limits.dnsTerms} DNS-querying terms` : void 0;
  }
  /** For PTR, `name` is the client address; the trace shows the reverse name. */
  async query(type, name, role) {
    if (this.clock.now() - this.startedAt > this.limits.elapsedMs) {
      return { kind: "limit", result: "temperror", problem: `evaluation took longer than ${this.limits.elapsedMs} ms` };
    }
    const answer = await this.ask(type, name);
    this.trace.push({
      kind: "dns",
      type,
      name: type === "PTR" ? reverseName(name) : name,
      answer: answer.kind,
      data: answer.kind === "records" ? answer.records.map(describeRecord) : answer.kind === "tempfail" ? [answer.reason] : []
    });
    if (role === "term" && (answer.kind === "nxdomain" || answer.kind === "nodata")) {
      this.voidLookups += 1;
      if (this.voidLookups > this.limits.voidLookups) {
        return { kind: "limit", result: "permerror", problem: `more than ${this.limits.voidLookups} void DNS lookups` };
      }
    }
    return answer;
  }
  ask(type, name) {
    switch (type) {
      case "A":
        return this.resolver.a(name);
      case "AAAA":
        return this.resolver.aaaa(name);
      case "MX":
        return this.resolver.mx(name);
      case "TXT":
        return this.resolver.txt(name);
      case "PTR":
        return this.resolver.ptr(name);
    }
  }
};
function describeRecord(record) {
  if (typeof record === "string") return record;
  const mx = record;
  return `${mx.priority} ${mx.exchange}`;
}

// src/checks/spf/macro.ts
var DOMAIN_LETTERS = /* @__PURE__ */ new Set(["s", "l", "o", "d", "i", "p", "h", "v"]);
var EXPLANATION_ONLY = /* @__PURE__ */ new Set(["c", "r", "t"]);
var DELIMITERS = /* @__PURE__ */ new Set([".", "-", "+", ",", "/", "_", "="]);
var TOPLABEL = /^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$/;
var MAX_NAME_LENGTH = 253;
var MAX_LABEL_LENGTH = 63;
function parseMacroString(text, options) {
  const tokens = [];
  let literal = "";
  let i = 0;
  while (i < text.length) {
    const code = text.charCodeAt(i);
    const ch = text[i];
    if (ch !== "%") {
      const visible = code >= 33 && code <= 126;
      if (!visible && !(options.explanation && code === 32)) {
        return { ok: false, problem: `character 0x${code.toString(16).padStart(2, "0")} is not allowed in a macro-string` };
      }
      literal += ch;
      i += 1;
      continue;
    }
    const next = text[i + 1];
    if (next === "%" || next === "_" || next === "-") {
      literal += next === "%" ? "%" : next === "_" ? " " : "%20";
      i += 2;
      continue;
    }
    if (next !== "{") return { ok: false, problem: `'%' must be followed by '{', '%', '_' or '-' in ${JSON.stringify(text)}` };
    const close = text.indexOf("}", i + 2);
    if (close < 0) return { ok: false, problem: `unterminated macro in ${JSON.stringify(text)}` };
    const macro = parseMacroBody(text.slice(i + 2, close), options.explanation);
    if (!macro.ok) return macro;
    if (literal !== "") tokens.push({ kind: "literal", text: literal });
    literal = "";
    tokens.push(macro.value);
    i = close + 1;
  }
  if (literal !== "") tokens.push({ kind: "literal", text: literal });
  return { ok: true, value: tokens };
}
function parseMacroBody(body, explanation) {
  const match = /^([A-Za-z])([0-9]*)([rR]?)(.*)$/s.exec(body);
  const letterText = match?.[1];
  if (match === null || letterText === void 0) return { ok: false, problem: `empty or malformed macro %{${body}}` };
  const letter = letterText.toLowerCase();
  if (!DOMAIN_LETTERS.has(letter) && !EXPLANATION_ONLY.has(letter)) return { ok: false, problem: `unknown macro letter in %{${body}}` };
  if (EXPLANATION_ONLY.has(letter) && !explanation) return { ok: false, problem: `%{${body}}: the c, r and t macros are allowed only in explanation text` };
  const digits = match[2] ?? "";
  if (digits.length > 3) return { ok: false, problem: `transformer number too long in %{${body}}` };
  const parts = digits === "" ? void 0 : Number(digits);
  if (parts === 0) return { ok: false, problem: `transformer number must not be zero in %{${body}}` };
  const delimiters = match[4] ?? "";
  for (const ch of delimiters) {
    if (!DELIMITERS.has(ch)) return { ok: false, problem: `invalid delimiter ${JSON.stringify(ch)} in %{${body}}` };
  }
  return {
    ok: true,
    value: { kind: "macro", letter, escape: letterText !== letter, parts, reverse: (match[3] ?? "") !== "", delimiters }
  };
}
function parseDomainSpec(text) {
  const parsed = parseMacroString(text, { explanation: false });
  if (!parsed.ok) return parsed;
  const last = parsed.value[parsed.value.length - 1];
  if (last === void 0) return { ok: false, problem: "empty domain-spec" };
  if (last.kind === "macro" || endsWithMacroEscape(text)) return parsed;
  const withoutDot = last.text.endsWith(".") ? last.text.slice(0, -1) : last.text;
  const dot = withoutDot.lastIndexOf(".");
  if (dot < 0 || !TOPLABEL.test(withoutDot.slice(dot + 1))) {
    return { ok: false, problem: `domain-spec ${JSON.stringify(text)} does not end in a macro or a valid top-level label` };
  }
  return parsed;
}
function endsWithMacroEscape(text) {
  let percents = 0;
  for (let i = text.length - 2; i >= 0 && text[i] === "%"; i--) percents++;
  return percents % 2 === 1 && ["%", "_", "-"].includes(text[text.length - 1] ?? "");
}
function usesValidatedName(tokens) {
  return tokens.some((token) => token.kind === "macro" && token.letter === "p");
}
function expandMacroString(tokens, context) {
  let out = "";
  for (const token of tokens) {
    out += token.kind === "literal" ? token.text : expandMacro(token, context);
  }
  return out;
}
function letterValue(letter, context) {
  switch (letter) {
    case "s":
      return context.sender;
    case "l":
      return context.localPart;
    case "o":
      return context.senderDomain;
    case "d":
      return context.domain;
    case "i":
      return context.ipDotted;
    case "p":
      return context.validatedName ?? "unknown";
    case "v":
      return context.ipVersion;
    case "h":
      return context.helo;
    case "c":
      return context.ipReadable;
    case "r":
      return context.receiver;
    case "t":
      return String(context.nowSeconds);
  }
}
function expandMacro(token, context) {
  let value = letterValue(token.letter, context);
  if (token.reverse || token.parts !== void 0 || token.delimiters !== "") {
    const delimiters = token.delimiters === "" ? "." : token.delimiters;
    let parts = splitOn(value, delimiters);
    if (token.reverse) parts = parts.reverse();
    if (token.parts !== void 0 && token.parts < parts.length) parts = parts.slice(parts.length - token.parts);
    value = parts.join(".");
  }
  return token.escape ? urlEscape(value) : value;
}
function splitOn(value, delimiters) {
  const parts = [];
  let current = "";
  for (const ch of value) {
    if (delimiters.includes(ch)) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}
function urlEscape(value) {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
function targetName(expanded) {
  let name = expanded.endsWith(".") ? expanded.slice(0, -1) : expanded;
  while (name.length > MAX_NAME_LENGTH && name.includes(".")) name = name.slice(name.indexOf(".") + 1);
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return { ok: false, problem: `${JSON.stringify(expanded)} is not a usable domain name` };
  for (const label of name.split(".")) {
    if (label.length === 0 || label.length > MAX_LABEL_LENGTH) {
      return { ok: false, problem: `${JSON.stringify(name)} has an empty label or one longer than ${MAX_LABEL_LENGTH} characters` };
    }
  }
  return { ok: true, name };
}

// src/checks/spf/record.ts
var MAX_RECORD_LENGTH = 4096;
var MODIFIER = /^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$/s;
var DIRECTIVE = /^([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)$/s;
var CIDR4 = /^(?:0|[1-9][0-9]?)$/;
var CIDR6 = /^(?:0|[1-9][0-9]{0,2})$/;
var DUAL_CIDR = /^(?:\/([0-9]+))?(?:\/\/([0-9]+))?$/;
var DOMAIN_AND_CIDR = /^(.*?)((?:\/[0-9]+)?(?:\/\/[0-9]+)?)$/s;
function parseRecordTerms(terms) {
  if (terms.length > MAX_RECORD_LENGTH) return { ok: false, problem: `record longer than ${MAX_RECORD_LENGTH} characters` };
  for (let i = 0; i < terms.length; i++) {
    const code = terms.charCodeAt(i);
    if (code < 32 || code > 126) {
      return { ok: false, problem: `record contains character 0x${code.toString(16).padStart(2, "0")}, which is not printable US-ASCII` };
    }
  }
  const record = { directives: [], hasAll: false };
  for (const term of terms.split(" ")) {
    if (term === "") continue;
    const problem = MODIFIER.test(term) ? addModifier(record, term) : addDirective(record, term);
    if (problem !== void 0) return { ok: false, problem };
  }
  return { ok: true, record };
}
function addModifier(record, term) {
  const [, rawName = "", value = ""] = MODIFIER.exec(term) ?? [];
  const name = rawName.toLowerCase();
  if (name === "redirect" || name === "exp") {
    const key = name === "redirect" ? "redirect" : "explanation";
    if (record[key] !== void 0) return `${name}= appears more than once`;
    const domain = parseDomainSpec(value);
    if (!domain.ok) return `${term}: ${domain.problem}`;
    record[key] = { domain: domain.value, text: term };
    return void 0;
  }
  const parsed = parseMacroString(value, { explanation: false });
  return parsed.ok ? void 0 : `${term}: ${parsed.problem}`;
}
function addDirective(record, term) {
  const match = DIRECTIVE.exec(term);
  if (match === null) return `${JSON.stringify(term)} is neither a mechanism nor a modifier`;
  const qualifier = match[1] || "+";
  const name = (match[2] ?? "").toLowerCase();
  const rest = match[3] ?? "";
  const mechanism = parseMechanism(name, rest);
  if (typeof mechanism === "string") return `${term}: ${mechanism}`;
  if (mechanism.kind === "all") record.hasAll = true;
  record.directives.push({ qualifier, mechanism, text: term });
  return void 0;
}
function parseMechanism(name, rest) {
  switch (name) {
    case "all":
      return rest === "" ? { kind: "all" } : '"all" takes no argument';
    case "include":
    case "exists": {
      if (!rest.startsWith(":")) return `"${name}" needs ":domain"`;
      const domain = parseDomainSpec(rest.slice(1));
      return domain.ok ? { kind: name, domain: domain.value } : domain.problem;
    }
    case "a":
    case "mx":
      return parseAddressMechanism(name, rest);
    case "ptr": {
      if (rest === "") return { kind: "ptr", domain: void 0 };
      if (!rest.startsWith(":")) return '"ptr" takes only ":domain"';
      const domain = parseDomainSpec(rest.slice(1));
      return domain.ok ? { kind: "ptr", domain: domain.value } : domain.problem;
    }
    case "ip4":
    case "ip6":
      return parseNetwork(name, rest);
    default:
      return `unknown mechanism "${name}"`;
  }
}
function parseAddressMechanism(name, rest) {
  let domainText;
  let cidrText = rest;
  if (rest.startsWith(":")) {
    const split = DOMAIN_AND_CIDR.exec(rest.slice(1));
    domainText = split?.[1] ?? "";
    cidrText = split?.[2] ?? "";
  } else if (rest !== "" && !rest.startsWith("/")) {
    return `"${name}" takes ":domain" and CIDR lengths only`;
  }
  const cidr = DUAL_CIDR.exec(cidrText);
  if (cidr === null) return `bad CIDR length ${JSON.stringify(cidrText)}`;
  const [, cidr4Text, cidr6Text] = cidr;
  if (cidr4Text !== void 0 && !(CIDR4.test(cidr4Text) && Number(cidr4Text) <= 32)) return `bad IPv4 CIDR length /${cidr4Text}`;
  if (cidr6Text !== void 0 && !(CIDR6.test(cidr6Text) && Number(cidr6Text) <= 128)) return `bad IPv6 CIDR length //${cidr6Text}`;
  let domain;
  if (domainText !== void 0) {
    const parsed = parseDomainSpec(domainText);
    if (!parsed.ok) return parsed.problem;
    domain = parsed.value;
  }
  return { kind: name, domain, cidr4: cidr4Text === void 0 ? 32 : Number(cidr4Text), cidr6: cidr6Text === void 0 ? 128 : Number(cidr6Text) };
}
function parseNetwork(name, rest) {
  if (!rest.startsWith(":")) return `"${name}" needs ":network"`;
  const value = rest.slice(1);
  const slash = value.lastIndexOf("/");
  const address = slash < 0 ? value : value.slice(0, slash);
  const prefix = slash < 0 ? void 0 : value.slice(slash + 1);
  const isIpv6Text = address.includes(":");
  if (name === "ip4" === isIpv6Text || address.startsWith("[")) return `${JSON.stringify(address)} is not an ${name === "ip4" ? "IPv4" : "IPv6"} address`;
  if (prefix !== void 0) {
    const valid = name === "ip4" ? CIDR4.test(prefix) && Number(prefix) <= 32 : CIDR6.test(prefix) && Number(prefix) <= 128;
    if (!valid) return `bad CIDR length /${prefix}`;
  }
  const cidr = parseCidr(value);
  if (!cidr.ok) return cidr.reason;
  return { kind: name, network: cidr.value };
}

// src/checks/spf/types.ts
var DEFAULT_SPF_LIMITS = { dnsTerms: 10, voidLookups: 2, mxNames: 10, ptrNames: 10, elapsedMs: 2e4 };

// src/checks/spf/evaluate.ts
var BUILTIN_DEFAULT_EXPLANATION = "The domain %{o} does not designate %{c} as a permitted sender";
var BUILTIN_EXPLANATION_TOKENS = builtinMacroString(BUILTIN_DEFAULT_EXPLANATION);
var MAX_SENDER_LENGTH = 320;
var SPF1_VERSION = /^v=spf1(?: |$)/i;
var QUALIFIER_RESULT = { "+": "pass", "-": "fail", "~": "softfail", "?": "neutral" };
var selectSpf1Record = (txt) => {
  const records = txt.filter((record2) => SPF1_VERSION.test(record2));
  const [record] = records;
  if (record === void 0) return { kind: "none" };
  if (records.length > 1) return { kind: "permerror", problem: `${records.length} SPF records` };
  return { kind: "record", record, terms: record.slice("v=spf1".length) };
};
function evaluateSpf(request, options) {
  const useHelo = request.identity === "helo" || request.mailFrom === "";
  const sender = useHelo ? `postmaster@${request.helo}` : request.mailFrom;
  return evaluatePolicy({ ip: request.ip, sender, helo: request.helo, identity: request.identity ?? "mailfrom" }, options, selectSpf1Record);
}
async function evaluatePolicy(request, options, selector) {
  const trace = [];
  const limits = { ...DEFAULT_SPF_LIMITS, ...options.limits };
  const lookups = new SpfLookups(options.resolver, limits, options.clock ?? systemClock, trace);
  const at = request.sender.lastIndexOf("@");
  const localPart = at <= 0 ? "postmaster" : request.sender.slice(0, at);
  const senderDomain = at < 0 ? request.sender : request.sender.slice(at + 1);
  const sender = `${localPart}@${senderDomain}`;
  const verdict = (outcome2, domain, explanation2) => ({
    result: outcome2.result,
    ...explanation2 === void 0 ? {} : { explanation: explanation2 },
    ...outcome2.mechanism === void 0 ? {} : { mechanism: outcome2.mechanism },
    ...outcome2.problem === void 0 ? {} : { problem: outcome2.problem },
    domain,
    identity: request.identity,
    sender,
    ip: request.ip,
    helo: request.helo,
    trace,
    lookups: { dnsTerms: lookups.dnsTerms, voidLookups: lookups.voidLookups }
  });
  const client = clientAddress(request.ip);
  if (client === void 0) return verdict({ result: "none", problem: `${JSON.stringify(request.ip)} is not an IP address` }, senderDomain.toLowerCase());
  if (sender.length > MAX_SENDER_LENGTH) return verdict({ result: "none", problem: `sender longer than ${MAX_SENDER_LENGTH} characters` }, senderDomain.toLowerCase());
  const evaluation = new Evaluation(request, options, client, lookups, selector, trace, limits, { sender, localPart, senderDomain });
  const outcome = await evaluation.checkHost(senderDomain, 0);
  const explanation = outcome.result === "fail" ? await evaluation.explain(outcome) : void 0;
  return verdict(outcome, asciiDomain(senderDomain)?.toLowerCase() ?? senderDomain.toLowerCase(), explanation);
}
var MAX_PARSED_RECORDS = 1e3;
var parsedRecords = /* @__PURE__ */ new Map();
function parseRecordCached(terms) {
  const known = parsedRecords.get(terms);
  if (known !== void 0) return known;
  const parsed = parseRecordTerms(terms);
  parsedRecords.set(terms, parsed);
  if (parsedRecords.size > MAX_PARSED_RECORDS) {
    const oldest = parsedRecords.keys().next();
    if (oldest.done !== true) parsedRecords.delete(oldest.value);
  }
  return parsed;
}
function builtinMacroString(text) {
  const parsed = parseMacroString(text, { explanation: true });
  if (!parsed.ok) throw new CalloutError("INTERNAL", `bad built-in macro-string ${JSON.stringify(text)}: ${parsed.problem}`);
  return parsed.value;
}
function asciiDomain(domain) {
  const name = domain.endsWith(".") ? domain.slice(0, -1) : domain;
  if (/^[\x21-\x7e]*$/.test(name)) return name;
  const ascii = domainToASCII(name);
  return ascii === "" ? void 0 : ascii;
}
function checkableDomain(domain) {
  if (domain.startsWith("[")) return { ok: false, problem: `${domain} is an address literal, not a domain` };
  const ascii = asciiDomain(domain);
  if (ascii === void 0) return { ok: false, problem: `${JSON.stringify(domain)} is not a valid domain name` };
  const target = targetName(ascii);
  if (!target.ok) return target;
  const labels = target.name.split(".");
  if (labels.length < 2) return { ok: false, problem: `${JSON.stringify(domain)} is not a fully qualified domain name` };
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? "")) return { ok: false, problem: `${JSON.stringify(domain)} has a numeric top-level label` };
  return target;
}
function nibbles(client) {
  return client.host.network.toString(16).padStart(32, "0").toUpperCase().split("").join(".");
}
function normaliseName(name) {
  return (name.endsWith(".") ? name.slice(0, -1) : name).toLowerCase();
}
var Evaluation = class {
  constructor(request, options, client, lookups, selector, trace, limits, identity) {
    this.options = options;
    this.client = client;
    this.lookups = lookups;
    this.selector = selector;
    this.trace = trace;
    this.limits = limits;
    const clock = options.clock ?? systemClock;
    this.baseContext = {
      ...identity,
      domain: identity.senderDomain,
      ipDotted: client.family === 4 ? formatIp({ family: 4, bits: client.host.network }) : nibbles(client),
      ipReadable: formatIp({ family: client.family, bits: client.host.network }),
      ipVersion: client.family === 4 ? "in-addr" : "ip6",
      helo: request.helo,
      receiver: options.receiver ?? "unknown",
      nowSeconds: Math.floor(clock.now() / 1e3)
    };
  }
  options;
  client;
  lookups;
  selector;
  trace;
  limits;
  validated;
  baseContext;
  async checkHost(domain, depth) {
    this.trace.push({ kind: "check", domain, depth });
    const checkable = checkableDomain(domain);
    if (!checkable.ok) return { result: "none", domain, problem: checkable.problem };
    const name = checkable.name;
    const answer = await this.lookups.query("TXT", name, "dependent");
    if (answer.kind === "limit") return { result: answer.result, domain: name, problem: answer.problem };
    if (answer.kind === "tempfail") return { result: "temperror", domain: name, problem: `TXT lookup of ${name} failed: ${answer.reason}` };
    if (answer.kind !== "records") return { result: "none", domain: name, problem: `${name} has no SPF record (${answer.kind})` };
    const selection = this.selector(answer.records);
    if (selection.kind === "none") return { result: "none", domain: name, problem: `${name} has no SPF record` };
    if (selection.kind === "permerror") return { result: "permerror", domain: name, problem: `${name}: ${selection.problem}` };
    this.trace.push({ kind: "record", domain: name, record: selection.record });
    const parsed = parseRecordCached(selection.terms);
    if (!parsed.ok) return { result: "permerror", domain: name, problem: `${name}: ${parsed.problem}` };
    const record = parsed.record;
    for (const directive of record.directives) {
      const outcome = await this.evaluateDirective(directive, name, depth);
      this.trace.push({
        kind: "term",
        domain: name,
        term: directive.text,
        outcome: outcome.kind === "match" ? "match" : outcome.kind === "no-match" ? outcome.note === void 0 ? "no match" : `no match (${outcome.note})` : `${outcome.result}: ${outcome.problem}`
      });
      if (outcome.kind === "error") return { result: outcome.result, domain: name, mechanism: directive.text, problem: outcome.problem };
      if (outcome.kind === "match") {
        return {
          result: QUALIFIER_RESULT[directive.qualifier],
          domain: name,
          mechanism: directive.text,
          ...record.explanation === void 0 ? {} : { explanation: { spec: record.explanation.domain, domain: name } }
        };
      }
    }
    if (record.redirect === void 0 || record.hasAll) return { result: "neutral", domain: name };
    const overLimit = this.lookups.countTerm();
    if (overLimit !== void 0) return { result: "permerror", domain: name, mechanism: record.redirect.text, problem: overLimit };
    const target = targetName(await this.expand(record.redirect.domain, name));
    if (!target.ok) return { result: "permerror", domain: name, mechanism: record.redirect.text, problem: `${record.redirect.text}: ${target.problem}` };
    const inner = await this.checkHost(target.name, depth + 1);
    this.trace.push({ kind: "term", domain: name, term: record.redirect.text, outcome: inner.result });
    if (inner.result === "none") return { ...inner, result: "permerror", problem: `${record.redirect.text}: ${inner.problem ?? "no SPF record"}` };
    return inner;
  }
  async evaluateDirective(directive, domain, depth) {
    const mechanism = directive.mechanism;
    switch (mechanism.kind) {
      case "all":
        return { kind: "match" };
      case "ip4":
      case "ip6": {
        const family = mechanism.kind === "ip4" ? 4 : 6;
        const matches = mechanism.network.family === family && networkHolds(mechanism.network, this.client);
        return matches ? { kind: "match" } : { kind: "no-match" };
      }
      default:
        break;
    }
    const overLimit = this.lookups.countTerm();
    if (overLimit !== void 0) return { kind: "error", result: "permerror", problem: overLimit };
    const target = mechanism.domain === void 0 ? { ok: true, name: domain } : targetName(await this.expand(mechanism.domain, domain));
    if (mechanism.kind === "include") {
      if (!target.ok) return { kind: "error", result: "permerror", problem: `${directive.text}: ${target.problem}` };
      return this.include(target.name, depth);
    }
    if (!target.ok) return { kind: "no-match", note: target.problem };
    switch (mechanism.kind) {
      case "a":
        return this.addressTerm(target.name, mechanism.cidr4, mechanism.cidr6);
      case "mx":
        return this.mxTerm(target.name, mechanism.cidr4, mechanism.cidr6);
      case "ptr":
        return this.ptrTerm(target.name);
      case "exists":
        return this.existsTerm(target.name);
    }
  }
  async include(target, depth) {
    const inner = await this.checkHost(target, depth + 1);
    switch (inner.result) {
      case "pass":
        return { kind: "match" };
      case "fail":
      case "softfail":
      case "neutral":
        return { kind: "no-match", note: `${target}: ${inner.result}` };
      case "temperror":
        return { kind: "error", result: "temperror", problem: inner.problem ?? `include:${target} gave temperror` };
      case "permerror":
        return { kind: "error", result: "permerror", problem: inner.problem ?? `include:${target} gave permerror` };
      case "none":
        return { kind: "error", result: "permerror", problem: `include:${target}: ${inner.problem ?? "no SPF record"}` };
    }
  }
  addressType() {
    return this.client.family === 4 ? "A" : "AAAA";
  }
  async addressTerm(name, cidr4, cidr6) {
    const answer = await this.lookups.query(this.addressType(), name, "term");
    const failed = termFailure(answer, name);
    if (failed !== void 0) return failed;
    if (answer.kind !== "records") return { kind: "no-match" };
    const prefix = this.client.family === 4 ? cidr4 : cidr6;
    return answer.records.some((address) => addressHolds(address, prefix, this.client)) ? { kind: "match" } : { kind: "no-match" };
  }
  async mxTerm(name, cidr4, cidr6) {
    const answer = await this.lookups.query("MX", name, "term");
    const failed = termFailure(answer, name);
    if (failed !== void 0) return failed;
    if (answer.kind !== "records") return { kind: "no-match" };
    if (answer.records.length > this.limits.mxNames) {
      return { kind: "error", result: "permerror", problem: `${name} has ${answer.records.length} MX records, more than ${this.limits.mxNames}` };
    }
    const prefix = this.client.family === 4 ? cidr4 : cidr6;
    const exchanges = [...answer.records].sort((x, y) => x.priority - y.priority).map((mx) => normaliseName(mx.exchange));
    for (const exchange of exchanges) {
      if (exchange === "") continue;
      const addresses = await this.lookups.query(this.addressType(), exchange, "dependent");
      const addressFailure = termFailure(addresses, exchange);
      if (addressFailure !== void 0) return addressFailure;
      if (addresses.kind === "records" && addresses.records.some((address) => addressHolds(address, prefix, this.client))) return { kind: "match" };
    }
    return { kind: "no-match" };
  }
  async ptrTerm(target) {
    const validated = await this.validatedNames("term");
    if (validated.kind === "error") return validated;
    const suffix = `.${target.toLowerCase()}`;
    return validated.names.some((name) => name === target.toLowerCase() || name.endsWith(suffix)) ? { kind: "match" } : { kind: "no-match" };
  }
  async existsTerm(name) {
    const answer = await this.lookups.query("A", name, "term");
    const failed = termFailure(answer, name);
    if (failed !== void 0) return failed;
    return answer.kind === "records" ? { kind: "match" } : { kind: "no-match" };
  }
  /**
   * §5.5: the client's PTR names (at most ptrNames) whose forward lookup gives the client
   * address back. A failed PTR lookup means no names; a failed forward lookup skips the name.
   * Computed once per evaluation, for ptr terms and %{p} alike.
   */
  validatedNames(role) {
    this.validated ??= this.findValidatedNames(role);
    return this.validated;
  }
  async findValidatedNames(role) {
    const answer = await this.lookups.query("PTR", this.client.text, role);
    if (answer.kind === "limit") return { kind: "error", result: answer.result, problem: answer.problem };
    if (answer.kind !== "records") return { kind: "names", names: [] };
    const candidates = [...new Set(answer.records.map(normaliseName))].slice(0, this.limits.ptrNames);
    const names = [];
    for (const candidate of candidates) {
      const addresses = await this.lookups.query(this.addressType(), candidate, "dependent");
      if (addresses.kind === "limit") return { kind: "error", result: addresses.result, problem: addresses.problem };
      const fullLength = this.client.family === 4 ? 32 : 128;
      if (addresses.kind === "records" && addresses.records.some((address) => addressHolds(address, fullLength, this.client))) names.push(candidate);
    }
    return { kind: "names", names };
  }
  /** §7.3 %{p}: the domain itself, else one of its subdomains, else any validated name. */
  async validatedNameFor(domain) {
    const validated = await this.validatedNames("dependent");
    if (validated.kind === "error") return "unknown";
    const lower = domain.toLowerCase();
    return validated.names.find((name) => name === lower) ?? validated.names.find((name) => name.endsWith(`.${lower}`)) ?? validated.names[0] ?? "unknown";
  }
  /** Synchronous unless the string uses %{p}, which needs the validated names first. */
  expand(tokens, domain) {
    if (!usesValidatedName(tokens)) return expandMacroString(tokens, { ...this.baseContext, domain });
    return this.validatedNameFor(domain).then((validatedName) => expandMacroString(tokens, { ...this.baseContext, domain, validatedName }));
  }
  /** §6.2: the exp= text of the record that failed, or the default explanation. */
  async explain(outcome) {
    const fromRecord = outcome.explanation === void 0 ? void 0 : await this.explanationText(outcome.explanation.spec, outcome.explanation.domain);
    if (fromRecord !== void 0) return fromRecord;
    const configured = parseMacroString(this.options.defaultExplanation ?? BUILTIN_DEFAULT_EXPLANATION, { explanation: true });
    return this.expand(configured.ok ? configured.value : BUILTIN_EXPLANATION_TOKENS, outcome.domain);
  }
  async explanationText(spec, domain) {
    const target = targetName(await this.expand(spec, domain));
    if (!target.ok) {
      this.trace.push({ kind: "note", message: `exp= ignored: ${target.problem}` });
      return void 0;
    }
    const answer = await this.lookups.query("TXT", target.name, "explanation");
    if (answer.kind !== "records" || answer.records.length !== 1) {
      this.trace.push({ kind: "note", message: `exp= ignored: ${target.name} gave ${answer.kind === "records" ? `${answer.records.length} TXT records` : answer.kind}` });
      return void 0;
    }
    const parsed = parseMacroString(answer.records[0] ?? "", { explanation: true });
    if (!parsed.ok) {
      this.trace.push({ kind: "note", message: `exp= ignored: ${parsed.problem}` });
      return void 0;
    }
    return this.expand(parsed.value, domain);
  }
};
function termFailure(answer, name) {
  if (answer.kind === "limit") return { kind: "error", result: answer.result, problem: answer.problem };
  if (answer.kind === "tempfail") return { kind: "error", result: "temperror", problem: `lookup of ${name} failed: ${answer.reason}` };
  return void 0;
}

// test/support/spf-suite.ts
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
var SUITE_DEFAULT_EXPLANATION = "DEFAULT";
var TYPES = ["A", "AAAA", "MX", "TXT", "PTR", "CNAME", "SPF"];
var MAX_CNAME_LINKS = 8;
var TTL = 300;
function suiteFile(name) {
  return fileURLToPath(new URL(`../fixtures/spf/${name}`, import.meta.url));
}
function loadSpfSuite(name) {
  const documents = parseAllDocuments(readFileSync(suiteFile(name), "utf8"));
  const list = Array.isArray(documents) ? documents : [documents];
  return list.map((document) => {
    const data = document.toJS();
    const cases = Object.entries(data.tests).map(([id, test]) => {
      const results = (Array.isArray(test.result) ? test.result : [test.result]).map((result) => legacyResult(String(result)));
      return {
        scenario: data.description,
        id,
        spec: String(test.spec ?? ""),
        helo: String(test.helo ?? ""),
        host: String(test.host ?? ""),
        mailfrom: String(test.mailfrom ?? ""),
        results,
        ...test.explanation === void 0 ? {} : { explanation: String(test.explanation) }
      };
    });
    return { description: data.description, cases, zone: buildZone(data.zonedata ?? {}) };
  });
}
function legacyResult(result) {
  if (result === "unknown") return "permerror";
  if (result === "error") return "temperror";
  return result;
}
function normalise(name) {
  return name.toLowerCase().replace(/\.$/, "");
}
function textOf(value) {
  return Array.isArray(value) ? value.map(String).join("") : String(value);
}
function buildZone(zonedata) {
  const zone = /* @__PURE__ */ new Map();
  for (const [owner, items] of Object.entries(zonedata)) {
    const node = { A: [], AAAA: [], MX: [], TXT: [], PTR: [], timeouts: /* @__PURE__ */ new Set() };
    const spf = [];
    let listsTxt = false;
    const hasData = (type) => type === "SPF" ? spf.length > 0 : type === "CNAME" ? node.CNAME !== void 0 : node[type].length > 0;
    for (const item of items ?? []) {
      if (item === "TIMEOUT") {
        for (const type2 of TYPES) if (!hasData(type2)) node.timeouts.add(type2);
        continue;
      }
      const [type, value] = Object.entries(item)[0] ?? [];
      if (value === "TIMEOUT") {
        node.timeouts.add(type);
        continue;
      }
      switch (type) {
        case "SPF":
          spf.push(textOf(value));
          break;
        case "TXT":
          listsTxt = true;
          if (value !== "NONE") node.TXT.push(textOf(value));
          break;
        case "MX": {
          const [priority, exchange] = value;
          node.MX.push({ priority: Number(priority), exchange: String(exchange) });
          break;
        }
        case "CNAME":
          node.CNAME = String(value);
          break;
        case "A":
        case "AAAA":
        case "PTR":
          node[type].push(String(value));
          break;
        default:
          throw new Error(`spf suite: unknown record type ${String(type)} at ${owner}`);
      }
    }
    if (!listsTxt) node.TXT.push(...spf);
    zone.set(normalise(owner), node);
  }
  return zone;
}
var SuiteResolver = class {
  constructor(zone) {
    this.zone = zone;
  }
  zone;
  a(name) {
    return Promise.resolve(this.answer(name, "A"));
  }
  aaaa(name) {
    return Promise.resolve(this.answer(name, "AAAA"));
  }
  mx(name) {
    return Promise.resolve(this.answer(name, "MX"));
  }
  txt(name) {
    return Promise.resolve(this.answer(name, "TXT"));
  }
  ptr(address) {
    return Promise.resolve(this.answer(reverseName(address), "PTR"));
  }
  /** The answer for a name and type, synchronously (PTR by reverse name); peers' resolvers use it too. */
  answer(name, type) {
    let owner = normalise(name);
    const seen = /* @__PURE__ */ new Set();
    for (let links = 0; links <= MAX_CNAME_LINKS; links++) {
      const node = this.zone.get(owner);
      if (node === void 0) {
        return owner.startsWith("error.") ? { kind: "tempfail", reason: `timeout (${owner})` } : { kind: "nxdomain", ttl: TTL };
      }
      if (node.timeouts.has(type)) return { kind: "tempfail", reason: `timeout (${type} ${owner})` };
      if (node.CNAME === void 0) {
        const records = node[type];
        return records.length > 0 ? { kind: "records", records: [...records], ttl: TTL } : { kind: "nodata", ttl: TTL };
      }
      seen.add(owner);
      owner = normalise(node.CNAME);
      if (seen.has(owner)) return { kind: "tempfail", reason: `CNAME loop at ${owner}` };
    }
    return { kind: "tempfail", reason: `CNAME chain longer than ${MAX_CNAME_LINKS} at ${name}` };
  }
};

// prof.tmp.ts
var sc = loadSpfSuite("rfc7208-tests.yml").map((s) => ({ s, r: new SuiteResolver(s.zone) }));
var n = 0;
var t0 = performance.now();
while (performance.now() - t0 < 2e3) for (const { s, r } of sc) for (const c of s.cases) {
  await evaluateSpf({ ip: c.host, mailFrom: c.mailfrom, helo: c.helo }, { resolver: r, defaultExplanation: SUITE_DEFAULT_EXPLANATION });
  n++;
}
console.log(n / 2, "/s");
