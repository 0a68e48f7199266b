import { PolicyRequestDecoder } from '../src/policy/protocol.js';
import { encodeRequest, postfixRequest } from '../test/support/policy-client.js';
const buf = Buffer.from(encodeRequest(postfixRequest()));
const dec = new PolicyRequestDecoder({});
for (let i = 0; i < 300000; i++) dec.push(buf);
