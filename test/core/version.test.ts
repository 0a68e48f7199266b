// The version texts name (`callout --version`, postgrey's %v in the greylist header) is package.json's.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CALLOUT_VERSION } from '../../src/core/version.js';

describe('CALLOUT_VERSION', () => {
  it("is package.json's version", () => {
    const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(CALLOUT_VERSION, manifest.version);
  });
});
