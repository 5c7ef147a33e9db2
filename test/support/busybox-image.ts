/**
 * Builds the test image offline (DESIGN.md section 5): a root filesystem
 * holding only the static `/bin/busybox` of Debian's `busybox-static` and a few
 * applet symlinks, imported with the engine's image import API. No registry,
 * no network.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';

const execFileAsync = promisify(execFile);

/** Where Debian's `busybox-static` installs its statically linked busybox. */
export const BUSYBOX_PATH = '/bin/busybox';
/** Default tag of the imported test image. */
export const BUSYBOX_IMAGE = 'deployer-test/busybox:latest';

/** Applets linked to busybox in `/bin` of the image. */
const APPLETS = [
  '[', 'ash', 'cat', 'date', 'echo', 'env', 'false', 'grep', 'head', 'hostname', 'id', 'kill', 'ls',
  'mkdir', 'printf', 'ps', 'pwd', 'rm', 'sed', 'sh', 'sleep', 'tail', 'test', 'timeout', 'touch',
  'true', 'uname', 'wc', 'yes',
] as const;

/**
 * Tells whether the test image can be built on this machine.
 *
 * @returns `null` when `/bin/busybox` exists, is executable and is statically
 * linked (it is copied alone into an otherwise empty image), else a
 * human-readable reason.
 */
export function busyboxAvailable(): string | null {
  try {
    accessSync(BUSYBOX_PATH, fsConstants.X_OK);
  } catch {
    return `${BUSYBOX_PATH} is missing (apt-get install -y busybox-static)`;
  }
  try {
    if (hasElfInterpreter(readFileSync(BUSYBOX_PATH))) {
      return `${BUSYBOX_PATH} is dynamically linked; install busybox-static instead of busybox`;
    }
  } catch (error) {
    return `cannot read ${BUSYBOX_PATH}: ${String(error)}`;
  }
  return null;
}

/** True when a little-endian ELF file has a PT_INTERP program header (i.e. is dynamically linked). */
function hasElfInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (elf[5] !== 1) throw new Error('not a little-endian ELF file');
  const is64 = elf[4] === 2;
  const phoff = is64 ? Number(elf.readBigUInt64LE(32)) : elf.readUInt32LE(28);
  const phentsize = elf.readUInt16LE(is64 ? 54 : 42);
  const phnum = elf.readUInt16LE(is64 ? 56 : 44);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const offset = phoff + i * phentsize;
    if (offset + 4 > elf.length) break;
    if (elf.readUInt32LE(offset) === PT_INTERP) return true;
  }
  return false;
}

/**
 * Imports a busybox-only image into the given engine, unless `tag` already
 * exists there.
 *
 * The root filesystem holds `/bin/busybox` plus symlinks (`/bin/sh`,
 * `/bin/sleep`, `/bin/true`, `/bin/false`, ...), a minimal `/etc/passwd` and
 * `/etc/group`, and `/tmp`; the image has `PATH=/bin` and `CMD ["/bin/sh"]`.
 * The tarball is built with the system `tar` (root-owned, fixed mtimes) and
 * sent with `POST /images/create?fromSrc=-`.
 *
 * @param docker client of the engine to import into (a private one, see `startPrivateDockerd`)
 * @param tag `repo:tag` to give the image
 * @returns the tag
 * @throws Error when busybox is unusable or the engine rejects the import
 */
export async function importBusyboxImage(docker: Docker, tag = BUSYBOX_IMAGE): Promise<string> {
  if (await imageExists(docker, tag)) return tag;
  const reason = busyboxAvailable();
  if (reason !== null) throw new Error(`cannot build the busybox test image: ${reason}`);

  const { repo, tag: version } = splitTag(tag);
  const workDir = await mkdtemp(path.join(tmpdir(), 'dcd-busybox-'));
  try {
    const rootfs = path.join(workDir, 'rootfs');
    const tarball = path.join(workDir, 'rootfs.tar');
    await buildRootfs(rootfs);
    await execFileAsync('tar', [
      '--create', '--file', tarball, '--directory', rootfs,
      '--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--mtime=@0',
      '.',
    ]);
    const stream = await docker.importImage(tarball, {
      repo,
      tag: version,
      changes: ['ENV PATH=/bin', 'CMD ["/bin/sh"]'],
    });
    await checkProgress(stream, tag);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  if (!(await imageExists(docker, tag))) throw new Error(`image import reported success but ${tag} is missing`);
  return tag;
}

/**
 * Writes the test image's root filesystem (see {@link importBusyboxImage})
 * into the directory `rootfs`, which is created: `/bin/busybox` with its
 * applet symlinks, `/etc/passwd`, `/etc/group` and `/tmp`. Exported for
 * suites that make image layers of their own (the test registry).
 */
export async function buildRootfs(rootfs: string): Promise<void> {
  const bin = path.join(rootfs, 'bin');
  const etc = path.join(rootfs, 'etc');
  const tmp = path.join(rootfs, 'tmp');
  await mkdir(bin, { recursive: true });
  await mkdir(etc);
  await mkdir(tmp);
  await chmod(tmp, 0o1777);
  await copyFile(BUSYBOX_PATH, path.join(bin, 'busybox'));
  await chmod(path.join(bin, 'busybox'), 0o755);
  for (const applet of APPLETS) await symlink('busybox', path.join(bin, applet));
  await writeFile(
    path.join(etc, 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  await writeFile(path.join(etc, 'group'), 'root:x:0:\nnogroup:x:65534:\n');
}

/** Splits `repo[:tag]` (the repo may contain a registry port, `host:5000/name`). */
function splitTag(ref: string): { repo: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref, tag: 'latest' };
}

async function imageExists(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch (error) {
    if ((error as { statusCode?: unknown }).statusCode === 404) return false;
    throw error;
  }
}

/** Reads the import's JSON progress stream to its end and throws on an error message in it. */
async function checkProgress(stream: NodeJS.ReadableStream, tag: string): Promise<void> {
  let text = '';
  for await (const chunk of stream) text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    let message: { error?: string; errorDetail?: { message?: string } };
    try {
      message = JSON.parse(line) as typeof message;
    } catch {
      continue;
    }
    const error = message.errorDetail?.message ?? message.error;
    if (error !== undefined) throw new Error(`importing ${tag} failed: ${error}`);
  }
}
