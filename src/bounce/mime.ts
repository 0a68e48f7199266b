/**
 * NAME
 *   bounce/mime - a small, bounded MIME reader for bounce messages
 *
 * DESCRIPTION
 *   Just enough MIME for delivery reports: header fields (unfolded, names lower-cased), the
 *   Content-Type with its parameters, multipart bodies split on their boundary, message/rfc822
 *   (and message/global) bodies read as nested messages, text/rfc822-headers as headers, and
 *   base64 / quoted-printable bodies decoded in the declared charset (UTF-8 when unknown).
 *   Malformed structure degrades to text rather than failing: a multipart without its boundary
 *   is one text part, a missing header/body separator means headers only.
 *
 * RFC
 *   RFC 5322 §2.2 (header fields, folding); RFC 2045 §5-6 (Content-Type, transfer encodings);
 *   RFC 2046 §5 (multipart, message/rfc822); RFC 2047 (encoded words, decoded in decodeWords);
 *   RFC 6532 (UTF-8 headers, read as UTF-8).
 *
 * LIMITS
 *   MIME_LIMITS: at most `parts` parts in total and `depth` levels of nesting (deeper parts are
 *   left as undecoded text), `headerBytes` of header per part, `headerFields` fields per part.
 *   The caller bounds the input size.
 *
 * ERRORS
 *   None: every input gives a part tree.
 */

export const MIME_LIMITS = {
  parts: 200,
  depth: 8,
  headerBytes: 64 * 1024,
  headerFields: 500,
} as const;

export interface HeaderField {
  /** Lower-cased. */
  name: string;
  /** Unfolded, trimmed. */
  value: string;
}

export interface ContentType {
  /** Lower-cased "type/subtype"; "text/plain" when absent or unreadable (RFC 2045 §5.2). */
  mediaType: string;
  /** Parameter names lower-cased, values unquoted. */
  params: Record<string, string>;
}

export interface MimePart {
  headers: HeaderField[];
  contentType: ContentType;
  /** Decoded body text (for multiparts the preamble is dropped and this is ''). */
  text: string;
  parts: MimePart[];
  /** The enclosed message of message/rfc822, message/global or text/rfc822-headers. */
  message?: MimePart;
  depth: number;
}

interface Budget {
  parts: number;
}

export function header(part: Pick<MimePart, 'headers'>, name: string): string | undefined {
  return part.headers.find((h) => h.name === name)?.value;
}

/** Splits a header block into fields; lines without a colon are ignored. */
export function parseHeaderBlock(block: string): HeaderField[] {
  const fields: HeaderField[] = [];
  const bounded = block.length > MIME_LIMITS.headerBytes ? block.slice(0, MIME_LIMITS.headerBytes) : block;
  for (const line of bounded.split(/\r?\n/)) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) {
      const last = fields[fields.length - 1]!;
      last.value = `${last.value} ${line.trim()}`.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    if (fields.length >= MIME_LIMITS.headerFields) break;
    fields.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}

export function parseContentType(value: string | undefined): ContentType {
  const fallback: ContentType = { mediaType: 'text/plain', params: {} };
  if (!value) return fallback;
  const semicolon = value.indexOf(';');
  const mediaType = (semicolon < 0 ? value : value.slice(0, semicolon)).replace(/\([^()]*\)/g, '').trim().toLowerCase();
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(mediaType)) return fallback;
  const params: Record<string, string> = {};
  const paramText = semicolon < 0 ? '' : value.slice(semicolon + 1);
  // A name is an RFC 2045 token (no '"' or white space) and starts only where a run of name
  // characters starts: from every character of a long run without '=' (or of white space, with a
  // leading \s*), the search scanned the rest of the run, seconds for a 64 KiB header.
  const pattern = /(?<![^\s=;"])([^\s=;"]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))\s*;?/g;
  for (let match = pattern.exec(paramText); match; match = pattern.exec(paramText)) {
    params[match[1]!.toLowerCase()] = match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : (match[3] ?? '');
  }
  return { mediaType, params };
}

function decodeCharset(bytes: Buffer, charset: string | undefined): string {
  if (charset) {
    try {
      return new TextDecoder(charset).decode(bytes);
    } catch {
      // Unknown charset label: fall through to UTF-8, which keeps ASCII intact.
    }
  }
  return bytes.toString('utf8');
}

/**
 * RFC 2045 §6.7: white space at the end of a line was added in transport and is dropped, so
 * `=` followed by spaces is still a soft line break. (trimEnd, not a regex: [ \t]+ before a
 * line end backtracks over every run of spaces that does not end one.)
 */
function decodeQuotedPrintable(text: string): Buffer {
  const bytes: number[] = [];
  const lines = text.split('\n');
  let soft = '';
  lines.forEach((raw, index) => {
    const line = raw.trimEnd();
    const last = index === lines.length - 1;
    if (line.endsWith('=') && !last) soft += line.slice(0, -1);
    else soft += last ? line : `${line}\n`;
  });
  for (let i = 0; i < soft.length; i++) {
    const c = soft.charCodeAt(i);
    if (c === 0x3d && /^[0-9A-Fa-f]{2}$/.test(soft.slice(i + 1, i + 3))) {
      bytes.push(parseInt(soft.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) bytes.push(c);
    else for (const b of Buffer.from(soft[i]!)) bytes.push(b);
  }
  return Buffer.from(bytes);
}

function decodeBody(raw: string, encoding: string | undefined, charset: string | undefined): string {
  switch (encoding?.toLowerCase()) {
    case 'base64':
      return decodeCharset(Buffer.from(raw.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64'), charset);
    case 'quoted-printable':
      return decodeCharset(decodeQuotedPrintable(raw), charset);
    default:
      return raw;
  }
}

/** RFC 2047 encoded words (=?charset?B|Q?text?=) in a header value. */
export function decodeWords(value: string): string {
  return value.replace(/=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=(\s+(?==\?))?/g, (_all, charset: string, kind: string, text: string) => {
    // '_' as =20, not as a space, which quoted-printable drops at the end of a line (§6.7).
    const bytes = kind.toUpperCase() === 'B' ? Buffer.from(text, 'base64') : decodeQuotedPrintable(text.replace(/_/g, '=20'));
    return decodeCharset(bytes, charset.replace(/\*.*$/, ''));
  });
}

/**
 * Header and body of a message or body part. A body part that starts with a blank line has no
 * header fields (RFC 2046 §5.1.1: all defaults); a whole message is read leniently past one.
 */
function splitHeaderBody(text: string, bodyPart: boolean): [string, string] {
  const match = (bodyPart ? /^\r?\n|\r?\n\r?\n/ : /\r?\n\r?\n/).exec(text);
  if (!match) return [text, ''];
  return [text.slice(0, match.index), text.slice(match.index + match[0].length)];
}

function splitMultipart(body: string, boundary: string): string[] | undefined {
  const delimiter = `--${boundary}`;
  const lines = body.split(/\r?\n/);
  const parts: string[] = [];
  let current: string[] | undefined;
  let sawDelimiter = false;
  for (const line of lines) {
    if (line.startsWith(delimiter)) {
      const rest = line.slice(delimiter.length);
      if (rest.startsWith('--')) {
        if (current) parts.push(current.join('\n'));
        return parts;
      }
      if (rest.trim() === '') {
        sawDelimiter = true;
        if (current) parts.push(current.join('\n'));
        current = [];
        continue;
      }
    }
    current?.push(line);
  }
  if (current) parts.push(current.join('\n'));
  return sawDelimiter ? parts : undefined;
}

/** `kind`: a message (or the top), a body part of a multipart, or text/rfc822-headers. */
function parsePart(text: string, depth: number, budget: Budget, kind: 'message' | 'body-part' | 'headers' = 'message'): MimePart {
  budget.parts--;
  const [headerText, bodyText] = kind === 'headers' ? [text, ''] : splitHeaderBody(text, kind === 'body-part');
  const headers = parseHeaderBlock(headerText);
  const contentType = parseContentType(header({ headers }, 'content-type'));
  const part: MimePart = { headers, contentType, text: '', parts: [], depth };
  const encoding = header(part, 'content-transfer-encoding');
  const deeper = depth + 1 < MIME_LIMITS.depth && budget.parts > 0;
  const type = contentType.mediaType;
  if (type.startsWith('multipart/') && contentType.params.boundary && deeper) {
    const pieces = splitMultipart(bodyText, contentType.params.boundary);
    if (pieces) {
      for (const piece of pieces) {
        if (budget.parts <= 0) break;
        part.parts.push(parsePart(piece, depth + 1, budget, 'body-part'));
      }
      return part;
    }
  }
  part.text = decodeBody(bodyText, encoding, contentType.params.charset);
  if ((type === 'message/rfc822' || type === 'message/global' || type === 'text/rfc822-headers') && deeper) {
    part.message = parsePart(part.text, depth + 1, budget, type === 'text/rfc822-headers' ? 'headers' : 'message');
  }
  return part;
}

export function parseMime(text: string): MimePart {
  return parsePart(text, 0, { parts: MIME_LIMITS.parts });
}

/** Every part, depth first, the enclosed messages included unless `enclosed` is false. */
export function* walkParts(part: MimePart, enclosed = true): Generator<MimePart> {
  yield part;
  for (const child of part.parts) yield* walkParts(child, enclosed);
  if (enclosed && part.message) yield* walkParts(part.message, enclosed);
}
