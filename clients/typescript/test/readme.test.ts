// Every ```js example in README.md runs as written against the gateway (ENSEMBLE_URL/ENSEMBLE_API_KEY).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", ".."); // build-test/test → package
const readme = readFileSync(join(root, "README.md"), "utf8");
const examples = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);

test("README has examples", () => assert.ok(examples.length >= 2));

for (const [i, code] of examples.entries()) {
  test(`README example ${i + 1} runs as written`, async () => {
    // Inside the package, so `import "@ensemble-gateway/client"` resolves to it (self-reference).
    const dir = join(root, "build-test", "readme");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `example-${i + 1}.mjs`);
    writeFileSync(file, code);
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [file], { timeout: 30_000 });
    assert.ok(stdout.length > 0, stderr);
    assert.doesNotMatch(stderr, /Error/);
    if (i === 0) {
      assert.match(stdout, /This is a mock answer from Ensemble\. You said: Say hello/);
      assert.match(stdout, /BadRequestError 400 invalid_request/);
    }
  });
}
