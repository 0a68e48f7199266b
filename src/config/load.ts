/**
 * NAME
 *   config/load - read the configuration file and merge command-line overrides
 *
 * DESCRIPTION
 *   The file is YAML (JSON is YAML too). Flags override the file key by key: they are turned
 *   into the same nested shape and merged before validation, so a flag is checked by the same
 *   schema and error messages as the key it sets.
 *
 * LIMITS
 *   A file of at most 1 MiB (MAX_CONFIG_BYTES; a larger one is refused before it is read whole),
 *   aliases that expand to at most 100 copies of an anchor (MAX_ALIAS_COUNT; the anchor
 *   itself is the first, so a one-item anchor takes 99 aliases), and lists and mappings nested
 *   at most 64 deep (MAX_NESTING).
 *
 * ERRORS
 *   ConfigError naming the file and, for YAML syntax errors, the line and column; an alias to
 *   no anchor, aliases whose expansion would exhaust memory, an anchor that contains its own
 *   alias and a !!binary value (which no setting takes) are refused the same way, with its key;
 *   lists and mappings nested deeper than MAX_NESTING, with the line of the first too deep;
 *   a tag yaml does not resolve (!ENV, !secret), with its line; a relative dataDir, which each
 *   command would take from its own working directory; a path that is not a regular file (a FIFO
 *   with no writer held a start or a reload for ever), or a file any user may write.
 *   UsageError for a value of a flag the schema refuses (loadConfig); a problem that only the file
 *   and a flag together make stays a ConfigError.
 */

import { isAbsolute } from 'node:path';
import { Composer, LineCounter, Parser, YAMLParseError, isNode, isScalar, visit, type CST, type Document, type YAMLError } from 'yaml';
import { CalloutError, ConfigError, UsageError, abbreviate, describeError } from '../core/errors.js';
import { MIB, readFileLimited, tooLarge } from '../core/files.js';
import { isRecord } from '../core/record.js';
import { ABSOLUTE_PATH_EXPECTED } from './paths.js';
import { describeValue, validateConfig } from './schema.js';
import type { Config } from './schema.js';

export type RawConfig = Record<string, unknown>;

/** Aliases a configuration may use: far more than one needs, far fewer than an attack. */
const MAX_ALIAS_COUNT = 100;
/**
 * The largest configuration file read: room for long inline lists (long ones belong in
 * whitelist files). yaml's parser needs about 500 times a file's size in memory: 8 MiB of flow
 * list took 54 s and 3.9 GB, which a reload would take inside the daemon.
 */
const MAX_CONFIG_BYTES = MIB;
/**
 * Lists and mappings inside each other: no setting is more than 6 down (a ratelimit stage's
 * limit: policy, stages, the stage, limits, the limit, in the top-level mapping). yaml composes
 * a collection by recursion: about 780 `[` exhausted the stack, which it reported as "YAML
 * syntax error at line 1, column 785: Maximum call stack size exceeded", and a second such file
 * in the same process (a daemon reloaded twice) aborted it (V8: "RegExpCompiler Allocation
 * failed - process out of memory").
 */
const MAX_NESTING = 64;

export interface ReadConfigOptions {
  /**
   * A file with no settings (empty, or comments only) is an error, not the defaults: at a
   * reload it is more likely a file an editor is still writing than a wish to drop every stage.
   */
  refuseEmpty?: boolean;
}

export interface LoadConfigOptions extends ReadConfigOptions {
  /**
   * The flag that sets a key, for a message about a value from the command line: the
   * administrator typed --timeout 0, not callout.timeouts.overall.
   */
  flagOf?: (key: string) => string;
}

export function readConfigFile(path: string, options: ReadConfigOptions = {}): RawConfig {
  const read = readFileLimited(path, MAX_CONFIG_BYTES, { governing: true });
  if (!read.ok) throw new ConfigError(`${path}: ${read.reason}${read.reason === tooLarge(MAX_CONFIG_BYTES) ? ': not a configuration file' : ''}`);
  const text = read.bytes.toString('utf8');
  // logLevel error: yaml's warnings (a collection used as a key) went to the process's stderr;
  // such a key is reported by the schema as unknown, with its path.
  // uniqueKeys: false, and duplicateKey below instead: yaml's own check compares each key with
  // every one before it in its mapping, so a file of 60,000 keys took 11 s (inside the daemon,
  // at a reload), and the 1 MiB a file may hold, half a minute.
  // parseDocument in two steps, so that the nesting is measured on the parser's tokens (it
  // reads them without recursion) before they are composed.
  const lines = new LineCounter();
  const tokens = [...new Parser(lines.addNewLine).parse(text)];
  const at = (offset: number) => {
    const { line, col } = lines.linePos(offset);
    return `line ${line}, column ${col}`;
  };
  const tooDeep = collectionDeeperThan(tokens, MAX_NESTING);
  if (tooDeep !== undefined) {
    throw new ConfigError(`${path}: lists and mappings nested more than ${MAX_NESTING} levels deep (the one at ${at(tooDeep.offset)} is the ${MAX_NESTING + 1}th): no setting is nested that deep`);
  }
  const [doc, second] = new Composer({ uniqueKeys: false, logLevel: 'error' }).compose(tokens, true, text.length);
  if (doc === undefined) throw new CalloutError('INTERNAL', `${path}: yaml composed no document, though it always composes one (forceDoc)`);
  if (second !== undefined) doc.errors.push(new YAMLParseError([second.range[0], second.range[1]], 'MULTIPLE_DOCS', 'a second document'));
  const where = (error: YAMLError) => (error.pos[0] < 0 ? '' : ` at ${at(error.pos[0])}`);
  const twice = duplicateKey(doc);
  // Whichever comes first in the file is told, as yaml's own check told it.
  if (twice !== undefined && (doc.errors.length === 0 || (twice.offset ?? Infinity) < doc.errors[0]!.pos[0])) {
    throw new ConfigError(`${path}: YAML syntax error${twice.offset === undefined ? '' : ` at ${at(twice.offset)}`}: Map keys must be unique`);
  }
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    if (first.code === 'MULTIPLE_DOCS') throw new ConfigError(`${path}: YAML syntax error${where(first)}: a second document begins here (after "---" or "..."), and a configuration file holds one`);
    // yaml quotes the offending text, which may be a whole line of any length.
    throw new ConfigError(`${path}: YAML syntax error${where(first)}: ${abbreviate(first.message.split('\n')[0]!, 200)}`);
  }
  // A tag yaml does not know (!ENV, !secret, !include from other tools) was only a warning, and
  // the value was taken as the plain text after it: `path: !ENV DB` set the path "DB".
  const unknownTag = doc.warnings.find((warning) => warning.code === 'TAG_RESOLVE_FAILED');
  if (unknownTag) {
    throw new ConfigError(`${path}: YAML tag${where(unknownTag)}: ${abbreviate(unknownTag.message.split('\n')[0]!, 200)}, which no setting takes`);
  }
  let value: unknown;
  try {
    // Aliases are resolved here: one to no anchor, or so many that expanding them would take
    // the process's memory (a "billion laughs" file; yaml stops at MAX_ALIAS_COUNT), is an error.
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new ConfigError(`${path}: YAML aliases: ${describeError(err)}`, { cause: err });
  }
  const odd = unusable(value, []);
  if (odd !== undefined) throw new ConfigError(`${path}: ${odd.path.join('.') || '(top level)'}: ${odd.why}`);
  if (value === null || value === undefined) {
    if (options.refuseEmpty) throw new ConfigError(`${path}: holds no settings (empty, or comments only: a file still being written?); the defaults would drop every configured stage`);
    return {};
  }
  if (!isRecord(value)) {
    // What it holds instead: a file of `- item` lines, or of one word (a path given for the file, say).
    throw new ConfigError(`${path}: got ${describeValue(value, [])} at the top level, expected a mapping of settings (key: value lines)`);
  }
  // One file is read by the daemon (started in / by init) and by `callout greylist` or `bounce`
  // in an administrator's directory: a relative dataDir gave each its own store, and `greylist
  // allow` said "allowed" in one the daemon never reads. (A --data-dir flag is the shell's, as --cache is.)
  const { dataDir } = value;
  if (typeof dataDir === 'string' && dataDir !== '' && !isAbsolute(dataDir)) {
    throw new ConfigError(`${path}: dataDir: got ${describeValue(value, ['dataDir'])}, ${ABSOLUTE_PATH_EXPECTED}`);
  }
  return value;
}

/**
 * The first key in the text given twice in one mapping (its offset), as yaml's uniqueKeys would
 * find it, in one pass with a set per mapping: keys are the same when they are one node or
 * scalars of the same value.
 */
function duplicateKey(doc: Document): { offset: number | undefined } | undefined {
  let found: { offset: number | undefined } | undefined;
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const { key } of map.items) {
        const same = isScalar(key) ? key.value : key;
        if (!seen.has(same)) {
          seen.add(same);
          continue;
        }
        // A mapping's first repeated key; one inside an earlier key's value may come first.
        const offset = isNode(key) ? key.range?.[0] : undefined;
        if (found === undefined || (offset !== undefined && (found.offset === undefined || offset < found.offset))) found = { offset };
        return;
      }
    },
  });
  return found;
}

/**
 * The first collection (block or flow list or mapping) in `tokens` that is more than `max`
 * inside others, a key's included; walked with a stack of its own, as deep as the file is.
 */
function collectionDeeperThan(tokens: readonly CST.Token[], max: number): CST.Token | undefined {
  const pending: Array<{ token: CST.Token | undefined; depth: number }> = tokens.map((token) => ({ token, depth: 0 })).reverse();
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { token, depth } = next;
    if (token?.type === 'document') pending.push({ token: token.value, depth });
    if (token?.type !== 'block-map' && token?.type !== 'block-seq' && token?.type !== 'flow-collection') continue;
    if (depth === max) return token;
    for (const item of [...token.items].reverse()) pending.push({ token: item.value, depth: depth + 1 }, { token: item.key ?? undefined, depth: depth + 1 });
  }
  return undefined;
}

/**
 * The path of a value no setting can take, if any: a collection inside itself (a YAML anchor
 * that contains its own alias), or a !!binary value, whose every octet the schema reported as
 * an unknown key (a 1 MB value made a message of 25 MB).
 */
function unusable(value: unknown, path: string[], within: object[] = [], checked = new WeakSet<object>()): { path: string[]; why: string } | undefined {
  if (ArrayBuffer.isView(value)) return { path, why: 'a !!binary value, which no setting takes' };
  if (value === null || typeof value !== 'object') return undefined;
  if (within.includes(value)) return { path, why: 'refers to itself (a YAML alias inside its own anchor)' };
  // An anchor's value is one object however many aliases name it: walked once. Walked again
  // for each alias, a 2 MB list named by 99 aliases took a minute and 2 GB to check.
  if (checked.has(value)) return undefined;
  for (const [key, member] of Object.entries(value)) {
    const found = unusable(member, [...path, key], [...within, value], checked);
    if (found) return found;
  }
  checked.add(value);
  return undefined;
}

/** Deep merge of plain objects; arrays and scalars in `override` replace those in `base`. */
export function mergeConfig(base: RawConfig, override: RawConfig): RawConfig {
  const merged = new Map(Object.entries(base));
  for (const [key, value] of Object.entries(override)) {
    if (value === undefined) continue;
    const current = merged.get(key);
    merged.set(key, isRecord(value) && isRecord(current) ? mergeConfig(current, value) : value);
  }
  // fromEntries defines every key, "__proto__" too: assigned, a file's top-level __proto__
  // became the merged object's prototype, and the key was neither read nor refused as unknown.
  return Object.fromEntries(merged);
}

/**
 * The file over `baseline` (a command's own defaults, such as the in-memory cache of
 * `callout verify`), and the flags over both.
 */
export function loadConfig(path: string | undefined, overrides: RawConfig = {}, baseline: RawConfig = {}, options: LoadConfigOptions = {}): Config {
  const fromFile = path ? readConfigFile(path, options) : {};
  // A bad flag is the command line's, not the file's: checked on its own first, so that the
  // message does not send the administrator to a file that says nothing of it, and refused as
  // a mistake on the command line (exit 64), as a flag its command refuses itself is (--timeout
  // 0): --port 0 exited 78, the status of a configuration to fix.
  if (Object.keys(overrides).length > 0) {
    let flagsOnly: Config;
    try {
      flagsOnly = validateConfig(mergeConfig(baseline, overrides), 'command line', options.flagOf, path !== undefined);
    } catch (err) {
      throw err instanceof ConfigError ? new UsageError(err.message) : err;
    }
    // Without a file that is the whole configuration.
    if (!path) return flagsOnly;
  }
  // Without a file or flags, "configuration:" sent the administrator looking for a file that
  // was never given.
  // With a file, a problem only the two together make (--workers 4 over a file's memory store)
  // is named by the flag where the flag set the key, which the flags win in the merge: the
  // file's name alone sent the administrator looking for a policy.workers it does not have.
  const { flagOf } = options;
  const keyName = flagOf && path ? (key: string) => (setIn(overrides, key) ? flagOf(key) : key) : flagOf;
  return validateConfig(mergeConfig(mergeConfig(baseline, fromFile), overrides), path ?? 'command line', keyName);
}

/** Whether `raw` holds the dotted `key` (an entry of a list too: callout.allowTargets.1). */
export function setIn(raw: unknown, key: string): boolean {
  let node = raw;
  for (const part of key.split('.')) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, part)) return false;
    node = (node as Record<string, unknown>)[part];
  }
  return true;
}
