/**
 * Expiry and destroy events, published by the scripts on the events channel. The first
 * listener subscribes (nobody pays for pub/sub traffic they do not read). The rule it
 * keeps: a listener's failure is its own, and a message that does not parse is dropped,
 * since anyone can publish on the channel.
 */
import type { SessionEvent } from '../../session/model.js';

/** An event from the channel, or undefined when it is not JSON. */
export function parseSessionEvent(message: string): SessionEvent | undefined {
  try {
    const raw = JSON.parse(message) as Record<string, unknown>;
    const event: SessionEvent = { type: raw['type'] === 'expired' ? 'expired' : 'destroyed', sessionId: String(raw['sessionId']), principal: typeof raw['principal'] === 'string' ? raw['principal'] : null, at: Number(raw['at']) };
    if (typeof raw['reason'] === 'string') event.reason = raw['reason'];
    return event;
  } catch {
    return undefined;
  }
}

export class SessionEvents {
  private readonly listeners = new Set<(event: SessionEvent) => void>();
  private subscribed: Promise<void> | undefined;

  /**
   * @param subscribe subscribes to the events channel
   * @param failed told when subscribing fails (the next listener tries again)
   */
  constructor(
    private readonly subscribe: (listener: (message: string) => void) => Promise<void>,
    private readonly failed: (error: Error) => void,
  ) {}

  on(listener: (event: SessionEvent) => void): () => void {
    this.listeners.add(listener);
    this.subscribed ??= this.subscribe((message) => this.deliver(message)).catch((err: Error) => {
      this.subscribed = undefined;
      this.failed(err);
    });
    return () => {
      this.listeners.delete(listener);
    };
  }

  private deliver(message: string): void {
    const event = parseSessionEvent(message);
    if (!event) return;
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own.
      }
    }
  }
}
