/**
 * NAME
 *   bench/correctness - each tool against the labelled cases of world.checkCases
 *
 * DESCRIPTION
 *   For each tool the exchangers of the labelled domains are started afresh on 127.77.1.x:25
 *   with the scriptable test server's presets (usersOnly, acceptAll, greylistOnce: fresh, so
 *   every tool meets its first RCPT greylisted), the cases are asked one at a time, and the
 *   servers are stopped. A spy on 127.0.0.1:25 (answering RCPT like a local MTA that does not
 *   relay, 554) records any connection a tool makes there: the null-MX case must contact nothing,
 *   and a tool that turns "MX 0 ." into an empty host name ends up on localhost. A case is right
 *   when the answer is the expected one and no spy connection was made while it ran.
 *
 * LIMITS
 *   A tool's own timeouts bound each case (10 s for the peers, the engine's defaults).
 */

import { acceptAll, greylistOnce, startSmtpServer, usersOnly } from '../test/support/smtp-server.js';
import type { SmtpScript, SmtpTestServer } from '../test/support/smtp-server.js';
import type { Checked, Tool } from './tools.js';
import { CHECK_USER, SMTP_PORT, checkCases, checkServers } from './world.js';
import type { CheckServer } from './world.js';

export interface CaseOutcome extends Checked {
  label: string;
  right: boolean;
  /** Connections the tool made to 127.0.0.1:25 during this case (undefined: no spy could bind). */
  localhostConnections: number | undefined;
}

export interface ToolCorrectness {
  tool: string;
  outcomes: CaseOutcome[];
}

function scriptFor(kind: CheckServer): Partial<SmtpScript> {
  switch (kind) {
    case 'users':
      return usersOnly([CHECK_USER]);
    case 'catch-all':
      return acceptAll();
    case 'greylist':
      return greylistOnce();
  }
}

async function startSpy(): Promise<SmtpTestServer | undefined> {
  try {
    return await startSmtpServer({ host: '127.0.0.1', port: SMTP_PORT, script: { rcpt: () => '554 5.7.1 Relay access denied' } });
  } catch {
    return undefined;
  }
}

export async function checkTool(tool: Tool): Promise<ToolCorrectness> {
  const servers = await Promise.all(checkServers.map((s) => startSmtpServer({ host: s.host, port: SMTP_PORT, script: scriptFor(s.kind) })));
  const spy = await startSpy();
  try {
    const outcomes: CaseOutcome[] = [];
    for (const testCase of checkCases) {
      const before = spy?.connectionCount ?? 0;
      const checked = await tool.check(testCase.address);
      const localhostConnections = spy ? spy.connectionCount - before : undefined;
      outcomes.push({
        ...checked,
        label: testCase.label,
        localhostConnections,
        right: checked.answer === testCase.expected && !localhostConnections,
      });
    }
    return { tool: tool.name, outcomes };
  } finally {
    await Promise.all([...servers, ...(spy ? [spy] : [])].map((s) => s.close()));
  }
}
