// repx.js: write RepX stages in JavaScript.
//
// A stage is a function of a context; `command` makes it the plugin's `run` export, which
// `repx plugin build` builds with componentize-js:
//
//     import { command, log } from "./repx.js";
//     export const run = command((ctx) => {
//         const n = ctx.param("n", "number", 10);
//         ctx.writeText(`${ctx.out}/n.txt`, String(n));
//     });
//
// The engine has no `process.env` and no `fs`: this module reads the environment and
// files through WASI (`wasi:cli/environment`, `wasi:filesystem`). The contract is
// guest-sdk/wit/stage.wit (world `command`).

import { runTool as hostRunTool, log as hostLog, progress as hostProgress } from "repx:stage/host@0.1.0";
import { exitWithCode } from "wasi:cli/exit@0.2.12";
import { getEnvironment } from "wasi:cli/environment@0.2.12";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";

/** The host refused to run a tool: no grant, a path outside the stage's, or it could not start. */
export class ToolRefused extends Error {
    constructor(message) {
        super(message);
        this.name = "ToolRefused";
    }
}

/** Ends the job with exit status `code` (0 to 255), which `repx run` reports as is. */
export class Exit extends Error {
    constructor(code) {
        super(`exit ${code}`);
        this.code = code;
    }
}

/** One line in the job log (`debug`, `info`, `warn`, `error`); warn and error are shown by `repx run`. */
export function log(level, message) {
    hostLog(level, String(message));
}

/** `done` of `total` units of work, for `repx run`'s bars. */
export function progress(done, total) {
    hostProgress(BigInt(done), BigInt(total));
}

/**
 * Runs a granted tool (or an executable inside an input) and returns its exit status.
 * Throws ToolRefused when the host refuses the request; a non-zero status is not an error.
 */
export function runTool(tool, args = [], { cwd = "/tmp", env = {}, stdoutFile } = {}) {
    try {
        return hostRunTool({
            tool,
            args: args.map(String),
            cwd,
            env: Object.entries(env).map(([k, v]) => [k, String(v)]).sort(),
            stdoutFile,
        });
    } catch (error) {
        if (error && error.payload !== undefined) throw new ToolRefused(String(error.payload));
        throw error;
    }
}

const preopens = () => getDirectories().sort((a, b) => b[1].length - a[1].length);

/** The preopened directory that holds `path`, and the path inside it. */
function locate(path) {
    for (const [dir, root] of preopens()) {
        if (path === root) return [dir, "."];
        if (path.startsWith(root.endsWith("/") ? root : root + "/")) {
            return [dir, path.slice(root.length).replace(/^\/+/, "")];
        }
    }
    throw new Error(`${path}: not inside a directory the stage was given`);
}

/** The bytes of the file at `path` (a guest path: `/in/...`, `/out/...`, `/tmp/...`). */
export function readBytes(path) {
    const [dir, rel] = locate(path);
    const file = dir.openAt({ symlinkFollow: false }, rel, {}, { read: true });
    const chunks = [];
    let offset = 0n;
    for (;;) {
        const [chunk, end] = file.read(65536n, offset);
        chunks.push(chunk);
        offset += BigInt(chunk.length);
        if (end || chunk.length === 0) break;
    }
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
        all.set(c, at);
        at += c.length;
    }
    return all;
}

/** The text of the file at `path`, as UTF-8. */
export function readText(path) {
    return new TextDecoder().decode(readBytes(path));
}

/** Writes `bytes` to the file at `path`, replacing it. */
export function writeBytes(path, bytes) {
    const [dir, rel] = locate(path);
    const file = dir.openAt({ symlinkFollow: false }, rel, { create: true, truncate: true }, { write: true });
    let offset = 0n;
    while (offset < BigInt(bytes.length)) {
        offset += file.write(bytes.subarray(Number(offset)), offset);
    }
}

/** Writes `text` as UTF-8 to the file at `path`, replacing it. */
export function writeText(path, text) {
    writeBytes(path, new TextEncoder().encode(String(text)));
}

/** The sorted entry names of the directory at `path`. */
export function readDir(path) {
    const [dir, rel] = locate(path);
    const handle = rel === "." ? dir : dir.openAt({}, rel, { directory: true }, { read: true });
    const stream = handle.readDirectory();
    const names = [];
    for (let entry = stream.readDirectoryEntry(); entry; entry = stream.readDirectoryEntry()) {
        names.push(entry.name);
    }
    return names.sort();
}

/** Whether something exists at `path`. */
export function exists(path) {
    try {
        const [dir, rel] = locate(path);
        dir.statAt({}, rel);
        return true;
    } catch {
        return false;
    }
}

const KINDS = { number: "a number", integer: "an integer", string: "a string", boolean: "true or false", object: "a table" };

/** The job as the stage sees it: parameters, inputs, output directory, mode. */
export class Context {
    constructor() {
        this.env = Object.fromEntries(getEnvironment());
        this.params = JSON.parse(this.env.REPX_PARAMS || "{}");
        this.jobId = this.env.REPX_JOB_ID || "";
        this.stage = this.env.REPX_STAGE || "";
        this.mode = this.env.REPX_MODE || "pure";
        this.out = "/out";
    }

    /** Parameter `key`, checked to be of `kind` ("number", "integer", "string", "boolean", "object"). */
    param(key, kind, fallback) {
        if (!(key in this.params)) return fallback;
        const value = this.params[key];
        const ok =
            kind === undefined ||
            (kind === "integer" ? Number.isInteger(value) : kind === "object" ? value !== null && typeof value === "object" : typeof value === kind);
        if (!ok) throw new Error(`parameter \`${key}\` must be ${KINDS[kind] || kind}, not ${JSON.stringify(value)}`);
        return value;
    }

    /** The directory of input `name`, read-only. */
    input(name) {
        const path = `/in/${name}`;
        if (name.includes("/") || !exists(path)) {
            const there = exists("/in") ? readDir("/in") : [];
            throw new Error(`the stage has no input \`${name}\`; its inputs: ${there.join(", ") || "none"}`);
        }
        return path;
    }

    readText(path) { return readText(path); }
    writeText(path, text) { return writeText(path, text); }
    readDir(path) { return readDir(path); }
}

/** Ends the job with exit status `code` (0 to 255). */
export function exit(code) {
    throw new Exit(code);
}

/**
 * The `run` export componentize-js looks for, running `main`: exit status 0 when it
 * returns, `code` for `exit(code)`, 1 with the message in the log when it throws.
 */
export function command(main) {
    return {
        run() {
            let code = 0;
            try {
                main(new Context());
            } catch (error) {
                if (error instanceof Exit) {
                    code = error.code;
                } else {
                    hostLog("error", String(error && error.stack ? `${error}\n${error.stack}` : error));
                    code = 1;
                }
            }
            if (code !== 0) exitWithCode(code & 0xff || 1);
        },
    };
}
