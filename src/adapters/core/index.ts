export { SessionRuntime, RequestSession, readOnlyPaths, COOKIE_ATTRIBUTE, type KilnSessionOptions } from './runtime.js';
export { createSessionObject, type KilnSessionObject, type SessionObjectHooks } from './session-object.js';
export { SessionCookie, type CookieOptions } from './session-cookie.js';
export { readCookie, signValue, unsignValue, serializeCookie } from './cookies.js';
