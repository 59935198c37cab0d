export interface Command {
  name: string;
  summary: string;
  help: string;
  /**
   * What the command is for is its output (status, sessions, top): when the reader goes
   * away (`kiln top | head`) the command ends, exit 0. A command that is not (a server,
   * the demo) outlives its reader: its output is dropped and its stop still runs.
   */
  outputOnly?: boolean;
  run(argv: string[]): Promise<number>;
}
