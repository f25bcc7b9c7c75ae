// The API client. The token lives in sessionStorage (this tab only, gone
// when it closes) and goes out only as the bearer token of same-origin
// requests; it is never put in a URL, a cookie or the page.

const TOKEN_KEY = 'rotatord.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// APIError carries the API's {"error","code"} and the HTTP status.
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Listeners for a token the server no longer takes (401).
const onUnauthorized = [];
export function whenUnauthorized(fn) {
  onUnauthorized.push(fn);
}

// query builds "?a=1&b=2" from the non-empty values of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// call sends a request to the API with the token and returns the decoded
// JSON body (null for an empty one), or throws an APIError.
export async function call(method, path, body, tok = token()) {
  const headers = { Accept: 'application/json' };
  if (tok) headers.Authorization = `Bearer ${tok}`;
  const init = { method, headers, cache: 'no-store', credentials: 'same-origin', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, 'network', 'rotatord cannot be reached');
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = null;
    }
  }
  if (!resp.ok) {
    const code = (data && data.code) || 'http_' + resp.status;
    const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
    const err = new APIError(resp.status, code, msg);
    if (resp.status === 401 && tok === token()) onUnauthorized.forEach((fn) => fn(err));
    throw err;
  }
  return { status: resp.status, data };
}

export async function get(path, params) {
  return (await call('GET', path + query(params))).data;
}

// Scopes nest: admin > rotate > read.
const ranks = { read: 1, rotate: 2, admin: 3 };
export function allows(scope, need) {
  return (ranks[scope] || 0) >= (ranks[need] || 99);
}

// describe turns an API error into what the operator should read.
export function describe(e) {
  if (e && e.status === 403 && /client certificate/i.test(e.message)) {
    return `${e.message}. Install your client certificate in the browser and reload.`;
  }
  return (e && e.message) || String(e);
}
