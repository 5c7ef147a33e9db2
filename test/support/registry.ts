/**
 * A tiny Docker Registry (HTTP API V2) of our own on 127.0.0.1, serving just
 * what `docker pull` needs: the version check, image manifests (schema 2) and
 * blobs. There is no image registry and no network but loopback in the test
 * environment (DESIGN.md section 5), so a REAL pull is proved against this.
 *
 * dockerd treats 127.0.0.0/8 as an insecure registry by default: it tries
 * HTTPS first, then falls back to plain HTTP, which this server speaks.
 *
 * Blob bodies may be throttled (sent in chunks with a pause between them) so
 * that a pull lasts long enough for its progress to be seen.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildRootfs } from './busybox-image.js';

const execFileAsync = promisify(execFile);

export const MANIFEST_V2 = 'application/vnd.docker.distribution.manifest.v2+json';
export const IMAGE_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const LAYER_TAR_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

/** Options of {@link startTestRegistry}. */
export interface TestRegistryOptions {
  /** Bytes per write of a blob body; the whole body at once when 0. Default 64 KiB. */
  chunkBytes?: number;
  /** Pause between two chunks of a blob body, in milliseconds. Default 0 (no throttling). */
  chunkDelayMs?: number;
}

/** What {@link TestRegistry.push} stored. */
export interface PushedImage {
  /** `sha256:...` of the manifest (what `RepoDigests` shows after a pull). */
  manifestDigest: string;
  /** `sha256:...` of the image config (the image id after a pull). */
  configDigest: string;
  /** `sha256:...` of each gzipped layer, as in the manifest. */
  layerDigests: string[];
  /** Sizes of the gzipped layers, in bytes. */
  layerSizes: number[];
}

/** Image config fields {@link TestRegistry.push} writes (defaults: `PATH=/bin`, `["/bin/sh"]`). */
export interface ImageConfigOptions {
  cmd?: string[];
  env?: string[];
}

/** A running test registry. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`: prefix image references with it. */
  host: string;
  /**
   * Stores an image `name:tag` made of `layers` (gzipped tar files, base
   * first) and returns its manifest digest. The config's `rootfs.diff_ids` are
   * the sha256 of the uncompressed layers.
   */
  push(name: string, tag: string, layers: Buffer[], config?: ImageConfigOptions): Promise<string>;
  /** Details of the last image pushed as `name:tag`. */
  pushed(name: string, tag: string): PushedImage | undefined;
  /** Every request answered so far, as `METHOD /path` (oldest first). */
  requests: string[];
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** The platform of this machine in OCI terms (the config's `architecture`). */
function goArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' };
  return map[process.arch] ?? process.arch;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A registry error body (https://distribution.github.io/distribution/spec/api/#errors). */
function registryError(code: string, message: string, detail: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail }] });
}

/**
 * Starts the registry on 127.0.0.1, port 0.
 *
 * Routes: `GET /v2/`; `HEAD|GET /v2/<name>/manifests/<tag|digest>`;
 * `HEAD|GET /v2/<name>/blobs/<digest>`. Anything else is a 404 (or 405 for a
 * method other than HEAD or GET) with a registry error body.
 */
export async function startTestRegistry(options: TestRegistryOptions = {}): Promise<TestRegistry> {
  const chunkBytes = options.chunkBytes ?? 64 * 1024;
  const chunkDelayMs = options.chunkDelayMs ?? 0;
  /** repository name -> tag or digest -> manifest digest. */
  const repos = new Map<string, Map<string, string>>();
  /** digest -> content (manifests, configs and layers alike). */
  const blobs = new Map<string, Buffer>();
  const images = new Map<string, PushedImage>();
  const requests: string[] = [];

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://registry');
    requests.push(`${method} ${url.pathname}`);
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const fail = (status: number, code: string, message: string, detail: unknown = {}) => {
      const body = Buffer.from(registryError(code, message, detail));
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
      res.end(method === 'HEAD' ? undefined : body);
    };
    if (method !== 'GET' && method !== 'HEAD') return fail(405, 'UNSUPPORTED', 'this test registry is read-only');
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
      return res.end(method === 'HEAD' ? undefined : '{}');
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) return fail(404, 'NOT_FOUND', 'no such route', { path: url.pathname });
    const [, name, kind, reference] = m as unknown as [string, string, 'manifests' | 'blobs', string];
    const repo = repos.get(name);
    if (!repo) return fail(404, 'NAME_UNKNOWN', 'repository name not known to registry', { name });
    if (kind === 'manifests') {
      const digest = repo.get(reference);
      const body = digest === undefined ? undefined : blobs.get(digest);
      if (digest === undefined || body === undefined) return fail(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, reference });
      res.writeHead(200, { 'Content-Type': MANIFEST_V2, 'Content-Length': body.length, 'Docker-Content-Digest': digest, ETag: `"${digest}"` });
      return res.end(method === 'HEAD' ? undefined : body);
    }
    const body = blobs.get(reference);
    // A blob is served only through a repository that references it, as a real registry does.
    if (body === undefined || ![...repo.values()].some((d) => d === reference || references(d, reference))) {
      return fail(404, 'BLOB_UNKNOWN', 'blob unknown to registry', { digest: reference });
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length, 'Docker-Content-Digest': reference, ETag: `"${reference}"` });
    if (method === 'HEAD') return res.end();
    void send(res, body);
  });

  /** Whether the manifest `manifestDigest` names blob `digest`. */
  function references(manifestDigest: string, digest: string): boolean {
    const manifest = blobs.get(manifestDigest);
    if (!manifest) return false;
    const parsed = JSON.parse(manifest.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    return parsed.config.digest === digest || parsed.layers.some((l) => l.digest === digest);
  }

  /** Writes `body` in chunks, pausing between them; stops when the client goes away. */
  async function send(res: http.ServerResponse, body: Buffer): Promise<void> {
    if (chunkBytes <= 0 || chunkDelayMs <= 0) {
      res.end(body);
      return;
    }
    let gone = false;
    let wake: (() => void) | undefined;
    res.once('close', () => {
      gone = true;
      wake?.();
    });
    res.on('drain', () => wake?.());
    for (let offset = 0; offset < body.length; offset += chunkBytes) {
      if (offset > 0) await sleep(chunkDelayMs);
      if (gone) return;
      if (!res.write(body.subarray(offset, offset + chunkBytes))) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        if (gone) return;
      }
    }
    res.end();
  }

  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    host: `127.0.0.1:${port}`,
    requests,
    async push(name, tag, layers, config = {}) {
      if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(name)) throw new Error(`invalid repository name ${name}`);
      if (layers.length === 0) throw new Error('an image needs at least one layer');
      const layerDigests = layers.map(sha256);
      const diffIds = layers.map((gz) => sha256(gunzipSync(gz)));
      const created = new Date(0).toISOString();
      const configBody = Buffer.from(
        JSON.stringify({
          architecture: goArch(),
          os: 'linux',
          created,
          config: { Env: config.env ?? ['PATH=/bin'], Cmd: config.cmd ?? ['/bin/sh'] },
          rootfs: { type: 'layers', diff_ids: diffIds },
          history: layers.map((_, i) => ({ created, created_by: `test registry layer ${i}` })),
        }),
      );
      const configDigest = sha256(configBody);
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MANIFEST_V2,
          config: { mediaType: IMAGE_CONFIG, size: configBody.length, digest: configDigest },
          layers: layers.map((gz, i) => ({ mediaType: LAYER_TAR_GZIP, size: gz.length, digest: layerDigests[i] })),
        }),
      );
      const manifestDigest = sha256(manifest);
      blobs.set(configDigest, configBody);
      layers.forEach((gz, i) => blobs.set(layerDigests[i]!, gz));
      blobs.set(manifestDigest, manifest);
      const repo = repos.get(name) ?? new Map<string, string>();
      repo.set(tag, manifestDigest);
      repo.set(manifestDigest, manifestDigest);
      repos.set(name, repo);
      images.set(`${name}:${tag}`, { manifestDigest, configDigest, layerDigests, layerSizes: layers.map((l) => l.length) });
      return manifestDigest;
    },
    pushed: (name, tag) => images.get(`${name}:${tag}`),
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

/**
 * A gzipped tar layer holding the busybox root filesystem of the test image
 * (see `busybox-image.ts`) plus `/pad.bin`, `padBytes` of random (so
 * incompressible) data that makes the layer big enough for pull progress to
 * show. Every call gives a different layer (the padding is random).
 */
export async function busyboxLayer(padBytes = 4 * 1024 * 1024): Promise<Buffer> {
  const workDir = await mkdtemp(path.join(tmpdir(), 'dcd-layer-'));
  try {
    const rootfs = path.join(workDir, 'rootfs');
    const tarball = path.join(workDir, 'layer.tar');
    await buildRootfs(rootfs);
    if (padBytes > 0) await writeFile(path.join(rootfs, 'pad.bin'), randomBytes(padBytes));
    await execFileAsync('tar', [
      '--create', '--file', tarball, '--directory', rootfs,
      '--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--mtime=@0',
      '.',
    ]);
    return gzipSync(await readFile(tarball));
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}
