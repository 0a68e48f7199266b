/**
 * NAME
 *   rewrite - envelope address rewriting: BATV, SRS, VERP, and the Postfix lookup services
 *
 * DESCRIPTION
 *   Pure rewriting (batv, srs, verp) is separate from the wire protocols (socketmap, tcp-table)
 *   that serve it to Postfix through the maps of rewrite/maps.
 */

export { BATV_LIMITS, Batv, parsePrvs, prvsDayStamp, prvsSign, prvsStampValid, type BatvCheckResult, type BatvKey, type BatvOptions, type BatvSignResult, type BatvWindow, type PrvsParts } from './batv.js';
export { SRS_LIMITS, Srs, isSrsAddress, srsTimestamp, type SrsAlphabet, type SrsForwardFailure, type SrsForwardResult, type SrsOptions, type SrsReverseFailure, type SrsReverseResult, type SrsSeparator } from './srs.js';
export { POSTFIX_VERP_DELIMITERS, QMAIL_VERP_DELIMITERS, VERP_LIMITS, parseVerpDelimiters, verpDecode, verpEncode, type VerpDecodeResult, type VerpDelimiters, type VerpEncodeResult } from './verp.js';
export { LookupServer, type LookupMap, type LookupResult, type LookupServerOptions, type LookupServerStats } from './lookup.js';
export { batvMaps, srsMaps, type BatvMapOptions } from './maps.js';
export { NetstringDecoder, SOCKETMAP_LIMITS, SocketmapServer, encodeNetstring, socketmapReply, type SocketmapServerOptions } from './socketmap.js';
export { TCP_TABLE_LIMITS, TcpTableServer, tcpTableDecode, tcpTableEncode, tcpTableReply, type TcpTableServerOptions } from './tcp-table.js';
