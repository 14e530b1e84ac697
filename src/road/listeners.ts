/** Who hears a link's notices: added once, called in order, never removed (links live as long as their process). */
export class Listeners<T> {
  private readonly list: ((value: T) => void)[] = [];

  add(listener: (value: T) => void): void {
    this.list.push(listener);
  }

  emit(value: T): void {
    for (const listener of this.list) listener(value);
  }
}
