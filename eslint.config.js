// Lint configuration: typescript-eslint's recommended rules over src/, test/, bench/, and two
// rules for tests: assert.ok with a message, assert.throws/rejects with the error expected.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bench/_tmp*', 'test/tmpprof/**', '.scratch*/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          // Without one, node:assert builds its message by reading the test's source, which has
          // hung a failing test instead of reporting it (under tsx's loader hooks: nodejs/node#52962).
          selector: "CallExpression[callee.object.name='assert'][callee.property.name='ok'][arguments.length<2]",
          message: 'give assert.ok a message: what was expected',
        },
        {
          selector: "CallExpression[callee.name='assert'][arguments.length<2]",
          message: 'give assert a message: what was expected',
        },
        {
          // A string second argument is the message, not the error expected.
          selector: "CallExpression[callee.object.name='assert'][callee.property.name=/^(throws|rejects)$/]:matches([arguments.length<2], [arguments.1.type='Literal']:not([arguments.1.regex]), [arguments.1.type='TemplateLiteral'])",
          message: 'give assert.throws/rejects the error expected (a class, a RegExp, an object or a function): without it any failure passes',
        },
      ],
    },
  },
);
