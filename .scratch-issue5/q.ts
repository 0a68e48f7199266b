import { TcpTableClient } from '/work/main/src/rewrite/tcp-table.js';
const c = await TcpTableClient.connect({ host: '127.0.0.1', port: 21001 });
console.log(await c.query('alice@example.org'), await c.query('sp ace@otherdomain.com'), await c.query('bob@example.com'), await c.query('x'));
const r = await TcpTableClient.connect({ host: '127.0.0.1', port: 21002 });
console.log(await r.query('SRS0=vmyz=2W=otherdomain.com=test@example.com'), await r.query('bob@example.com'));
c.close(); r.close();
