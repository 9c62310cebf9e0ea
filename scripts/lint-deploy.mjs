// Lints what cannot run here (no container engine, no cluster): the Kubernetes examples in deploy/kubernetes and
// the Dockerfile. The YAML must parse; every image must be one that exists (the one this Dockerfile builds, or one
// listed below); every sidekick flag must be one that `sidekick --help` lists, before the first SITE; probes must
// ask sidekick's own health path on the port it listens on; the Spark example must run sidekick as a native
// sidecar. The Dockerfile's build stage must run scripts/package.sh, and its runtime stage must copy what that
// script lays out, run as a non-root user and start the binary that is there.
//   node scripts/lint-deploy.mjs SIDEKICK-COMMAND...   (e.g. artifacts/sidekick/sidekick, or dotnet .../sidekick.dll)
// Prints one line per problem and exits 1 if there is any.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const command = process.argv.slice(2);
if (command.length === 0) {
  console.error('lint-deploy.mjs: give the sidekick command whose --help lists the flags, e.g. artifacts/sidekick/sidekick');
  process.exit(2);
}

// Images published by others that the examples and the Dockerfile use (checked by hand when changed: each exists
// in its registry). The image this repository builds is called "sidekick" (any tag).
const publishedImages = new Set([
  'mcr.microsoft.com/dotnet/sdk:10.0',
  'mcr.microsoft.com/dotnet/runtime-deps:10.0-noble-chiseled',
  'apache/spark:3.5.3',
]);
const ownImage = /^sidekick(:[\w.-]+)?$/;
const imageExists = (image) => publishedImages.has(image) || ownImage.test(image);

const problems = [];
const problem = (where, text) => problems.push(`${where}: ${text}`);

// "  --address value, -a value   listening address ..." -> address, a
const help = execFileSync(command[0], [...command.slice(1), '--help'], { encoding: 'utf8' });
const flags = new Set();
for (const line of help.split('\n')) {
  const match = /^\s+(-.*?)(\s{2,}|$)/.exec(line);
  if (!match) continue;
  for (const spelling of match[1].split(', ')) {
    flags.add(spelling.trim().split(/\s/)[0].replace(/^-+/, ''));
  }
}
if (!flags.has('address') || !flags.has('health-path')) {
  console.error(`lint-deploy.mjs: '${command.join(' ')} --help' listed no flags (${[...flags].join(', ')})`);
  process.exit(1);
}

// The pod specs of a manifest: a Pod's own, or the template of a workload.
const podSpecs = (doc) => {
  if (doc.kind === 'Pod') return [doc.spec];
  if (['DaemonSet', 'Deployment', 'StatefulSet', 'ReplicaSet', 'Job'].includes(doc.kind)) return [doc.spec?.template?.spec];
  if (doc.kind === 'CronJob') return [doc.spec?.jobTemplate?.spec?.template?.spec];
  return [];
};

const checkSidekick = (where, container) => {
  const args = container.args ?? [];
  let address = ':8080';
  let sites = 0;
  for (const arg of args) {
    if (typeof arg !== 'string') {
      problem(where, `argument ${JSON.stringify(arg)} is not a string`);
    } else if (arg.startsWith('-')) {
      const name = arg.replace(/^-+/, '').split('=')[0];
      if (!flags.has(name)) problem(where, `flag '${arg}' is not one that sidekick --help lists`);
      if (sites > 0) problem(where, `flag '${arg}' after a SITE would be taken as a SITE: flags go first`);
      if (name === 'address' || name === 'a') address = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : address;
    } else if (/^https?:\/\//.test(arg)) {
      sites++;
    } else {
      problem(where, `argument '${arg}' is neither a flag (with its value after '=') nor a SITE URL`);
    }
  }
  if (sites === 0) problem(where, 'no SITE: sidekick would exit 2');
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const probe = container[kind]?.httpGet;
    if (!probe) continue;
    if (!['/v1/health', '/.prometheus/metrics'].includes(probe.path)) problem(where, `${kind} asks ${probe.path}, not one of sidekick's own paths`);
    const probePort = typeof probe.port === 'number' ? probe.port : container.ports?.find((p) => p.name === probe.port)?.containerPort;
    if (probePort !== port) problem(where, `${kind} probes port ${probe.port}, sidekick listens on ${port}`);
  }
  if (!container.ports?.some((p) => p.containerPort === port)) problem(where, `no containerPort ${port} for --address ${address}`);
};

const directory = join(root, 'deploy', 'kubernetes');
const files = readdirSync(directory).filter((f) => /\.ya?ml$/.test(f)).sort();
if (files.length === 0) problem('deploy/kubernetes', 'no YAML files');
for (const file of files) {
  const path = `deploy/kubernetes/${file}`;
  const docs = parseAllDocuments(readFileSync(join(directory, file), 'utf8'));
  let nativeSidecar = false;
  for (const [index, doc] of docs.entries()) {
    const where = `${path} (document ${index + 1})`;
    for (const error of [...doc.errors, ...doc.warnings]) problem(where, error.message);
    const value = doc.toJS();
    if (!value?.apiVersion || !value?.kind || !value?.metadata?.name) {
      problem(where, 'needs apiVersion, kind and metadata.name');
      continue;
    }
    for (const spec of podSpecs(value)) {
      if (!spec?.containers?.length) problem(where, 'a pod spec without containers');
      const all = [...(spec?.initContainers ?? []).map((c) => [c, true]), ...(spec?.containers ?? []).map((c) => [c, false])];
      for (const [container, init] of all) {
        const at = `${where} container '${container.name}'`;
        if (!imageExists(container.image)) problem(at, `image '${container.image}' is neither the sidekick image nor one known to exist`);
        if (ownImage.test(container.image ?? '')) {
          checkSidekick(at, container);
          if (init && container.restartPolicy === 'Always') nativeSidecar = true;
        }
      }
    }
  }
  if (/spark/.test(file) && !nativeSidecar) problem(path, 'sidekick is not a native sidecar (an init container with restartPolicy: Always)');
}

// The Dockerfile: stages, base images, the build command and what the runtime stage starts.
const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
const stages = [];
for (const line of dockerfile.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
  const [instruction, ...rest] = line.split(/\s+/);
  if (instruction.toUpperCase() === 'FROM') stages.push({ image: rest[0], name: rest[2], lines: [] });
  else if (stages.length > 0) stages.at(-1).lines.push([instruction.toUpperCase(), rest.join(' ')]);
  else if (instruction.toUpperCase() !== 'ARG') problem('Dockerfile', `'${instruction}' before the first FROM`);
}
if (stages.length !== 2) problem('Dockerfile', `expected two stages (build, runtime), found ${stages.length}`);
for (const stage of stages) {
  if (!publishedImages.has(stage.image)) problem('Dockerfile', `base image '${stage.image}' is not one known to exist`);
}
const [build, runtime] = stages;
if (build && !build.lines.some(([i, text]) => i === 'RUN' && text === 'bash scripts/package.sh')) {
  problem('Dockerfile', "the build stage does not 'RUN bash scripts/package.sh' (the command CI runs)");
}
if (runtime) {
  const copy = runtime.lines.find(([i]) => i === 'COPY')?.[1] ?? '';
  if (copy !== `--from=${build?.name} /src/artifacts/image/ /`) problem('Dockerfile', `the runtime stage copies '${copy}', not package.sh's artifacts/image/`);
  const user = runtime.lines.findLast(([i]) => i === 'USER')?.[1];
  if (!user || user === 'root' || user === '0') problem('Dockerfile', 'the runtime stage does not run as a non-root user');
  const entrypoint = runtime.lines.find(([i]) => i === 'ENTRYPOINT')?.[1];
  if (entrypoint !== '["/usr/bin/sidekick"]') problem('Dockerfile', `ENTRYPOINT ${entrypoint} is not ["/usr/bin/sidekick"]`);
  const packageScript = readFileSync(join(root, 'scripts', 'package.sh'), 'utf8');
  if (!packageScript.includes('artifacts/image/usr/bin/sidekick')) problem('Dockerfile', 'scripts/package.sh does not lay out artifacts/image/usr/bin/sidekick');
}

for (const line of problems) console.error(line);
if (problems.length > 0) process.exit(1);
console.log(`lint-deploy.mjs: ${files.length} Kubernetes files and the Dockerfile: images, flags, probes and stages check out (${flags.size} flags known)`);
