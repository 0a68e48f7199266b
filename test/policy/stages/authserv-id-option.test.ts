// The authservId of the spf and iprev stages: a name their Authentication-Results can carry as written.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hostname } from 'node:os';
import { iprevStage } from '../../../src/policy/stages/iprev.js';
import { spfStage } from '../../../src/policy/stages/spf.js';

describe('authservId', () => {
  for (const stage of [spfStage, iprevStage]) {
    it(`${stage.name}: refuses what the header would change ("?" for non-ASCII, quotes for a space or a special) and takes a host name`, () => {
      for (const bad of ['mx.bücher.example', 'mx example', '', 'mx.example.net\t', '[192.0.2.1]', 'mx@example.net', 'mx;example', 'mx/example']) {
        const parsed = stage.options.safeParse({ authservId: bad });
        assert.equal(parsed.success, false, `${JSON.stringify(bad)} refused`);
        assert.match(parsed.error?.issues[0]?.message ?? '', /printable ASCII without spaces or any of/, JSON.stringify(bad));
      }
      for (const good of ['mx.example.net', 'mx.xn--bcher-kva.example']) {
        assert.equal((stage.options.parse({ authservId: good }) as { authservId: string }).authservId, good);
      }
      assert.equal((stage.options.parse({}) as { authservId: string }).authservId, hostname(), "this host's name by default");
    });
  }
});
