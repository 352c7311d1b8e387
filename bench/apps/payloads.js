// The bodies every peer serves, so all of them answer byte-for-byte alike.
export const HELLO = 'Hello, World!';
/** A 4 KiB JSON document. */
export const JSON_4K = JSON.stringify({
  items: Array.from({ length: 48 }, (_, i) => ({ id: i, name: `item-${i}`, tags: ['a', 'b'], ok: i % 2 === 0 })),
}).padEnd(4096, ' ');
