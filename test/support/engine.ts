import Docker from 'dockerode';
import { importBusyboxImage } from './busybox-image.js';
import { startPrivateDockerd, type PrivateDockerd } from './dockerd.js';

/** A private dockerd (see `dockerd.ts`) with the busybox test image imported. */
export interface Engine {
  dockerd: PrivateDockerd;
  /** A client of the private engine. */
  docker: Docker;
  /** Tag of the imported busybox image. */
  image: string;
}

/** Starts a private dockerd and imports the busybox image into it; stops the engine again when the import fails. */
export async function startEngine(): Promise<Engine> {
  const dockerd = await startPrivateDockerd();
  const docker = new Docker({ socketPath: dockerd.socketPath });
  try {
    return { dockerd, docker, image: await importBusyboxImage(docker) };
  } catch (err) {
    await dockerd.stop();
    throw err;
  }
}
