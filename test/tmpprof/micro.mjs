const client = { family: 6, host: { network: 0xcafebabe000000000000000000000001n }, text: 'cafe:babe::1' };
function nibbles(c) { return c.host.network.toString(16).padStart(32, '0').toUpperCase().split('').join('.'); }
let t = performance.now(); let x = 0;
for (let i = 0; i < 200000; i++) x += nibbles(client).length;
console.log('nibbles', ((performance.now() - t) / 200000 * 1000).toFixed(2), 'us');
const id = { sender: 'a@b.c', localPart: 'a', senderDomain: 'b.c' };
t = performance.now();
for (let i = 0; i < 200000; i++) { const o = { ...id, domain: 'x', ipDotted: 'y', ipReadable: 'z', ipVersion: 'in-addr', helo: 'h', receiver: 'unknown', nowSeconds: Math.floor(Date.now() / 1000) }; x += o.domain.length; }
console.log('ctx', ((performance.now() - t) / 200000 * 1000).toFixed(2), 'us');
