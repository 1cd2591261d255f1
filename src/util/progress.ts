/** Progress lines for long set-up steps (package installs, downloads, image builds), on stderr. */
export type ProgressSink = (message: string) => void;

export const stderrProgress: ProgressSink = (message) => {
  process.stderr.write(`tsvmm: ${message}\n`);
};

export const silentProgress: ProgressSink = () => {};
