'use strict';
// A stand-in for a database migration, run by hoist as the `before_activate`
// hook of apps/web.yaml: in the new release directory, before `current` moves
// to it. A non-zero exit would stop the deploy.

const release = (() => {
  try {
    return require('node:fs').readFileSync(require('node:path').join(__dirname, '..', 'RELEASE'), 'utf8').trim();
  } catch (_) {
    return require('../package.json').version;
  }
})();

console.log(`migrate: nothing to migrate for ${process.env.APP_NAME || 'app'} ${release} in ${process.cwd()}`);
process.exit(0);
