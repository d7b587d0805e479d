// The web console, end to end, in a real browser: Playwright (playwright-core) driving
// Debian's Chromium headless against a running cluster that tests/tests/console.rs started
// (3 agents serving TLS and requiring a token, etcd, s3s-fs, a compactor).
//
// Environment (set by console.rs):
//   CONSOLE_URLS   the agents' consoles, comma-separated (https://127.0.0.1:PORT)
//   PLAIN_URL      the first agent's HTTP port over plaintext (http://127.0.0.1:PORT)
//   STRATA_BIN     the strata binary; STRATA_SERVER, STRATA_TLS_CA, STRATA_TOKEN for it
//   ARTIFACTS      where screenshots go
//   CHROMIUM       the browser (default /usr/bin/chromium)
//
// Every check throws on failure; the process exits non-zero with the reason.
"use strict";

const { chromium } = require("playwright-core");
const { execFileSync, spawn } = require("child_process");
const fs = require("fs");
const path = require("path");

const urls = process.env.CONSOLE_URLS.split(",");
const base = urls[0];
const artifacts = process.env.ARTIFACTS;
const token = process.env.STRATA_TOKEN;
const TOPIC = "orders";
const GROUP = "console-readers";

function log(...args) {
  console.log(new Date().toISOString(), ...args);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function strata(args, input) {
  return execFileSync(process.env.STRATA_BIN, args, {
    input: input || "",
    encoding: "utf8",
    env: process.env,
    stdio: ["pipe", "pipe", "pipe"],
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Stops a child process and resolves once it has exited (at once if it already had).
function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  return exited;
}

async function eventually(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(500);
  }
  throw new Error(`${what}: not within ${seconds} s${last ? ` (last: ${last.message})` : ""}`);
}

// `strata topic describe`: partition rows and the record count.
function describeTopic(topic) {
  const out = strata(["topic", "describe", topic]);
  const lines = out.split("\n");
  const header = lines.findIndex((l) => l.startsWith("partition\t"));
  const rows = lines
    .slice(header + 1)
    .filter((l) => l.trim())
    .map((l) => l.split("\t"));
  const records = out.match(/^ {2}records (\d+)$/m)[1];
  return { rows, records };
}

// `strata group describe`: the offsets table (topic, partition, committed, log end, lag).
function describeGroup(group) {
  const out = strata(["group", "describe", group]);
  const lines = out.split("\n");
  const header = lines.findIndex((l) => l.startsWith("TOPIC\t"));
  return lines
    .slice(header + 1)
    .filter((l) => l.trim())
    .map((l) => l.split("\t").slice(0, 5));
}

async function tableRows(page, selector) {
  return page.$$eval(`${selector} tbody tr`, (rows) =>
    rows.map((row) => Array.from(row.querySelectorAll("td")).map((td) => td.textContent.trim()))
  );
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const errors = [];
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  // A step that is refused on purpose (a wrong token, an unconfirmed deletion) makes the
  // browser log its status: take exactly that out, and nothing else.
  function expectRefusal(status) {
    const refused = errors.filter((e) => e.includes(`status of ${status}`));
    check(refused.length === 1, `expected one ${status} in the browser's log, got: ${errors.join("\n")}`);
    errors.splice(errors.indexOf(refused[0]), 1);
  }

  async function visit(pathname, shot) {
    const response = await page.goto(base + pathname, { waitUntil: "load" });
    check(response.ok(), `${pathname} answered ${response.status()}: ${(await page.content()).slice(0, 2000)}`);
    if (shot) await page.screenshot({ path: path.join(artifacts, `${shot}.png`), fullPage: true });
    return response;
  }

  // --- Data made with the CLI ---------------------------------------------------------
  strata(["topic", "create", TOPIC, "--partitions", "4", "--config", "archive.enabled=true"]);
  let lines = "";
  for (let i = 0; i < 200; i++) lines += `order-${i}:{"order":${i},"item":"widget"}\n`;
  strata(["produce", TOPIC, "--key-separator", ":"], lines);
  log("topic and 200 records made with the CLI");

  // --- Without a token nothing works ----------------------------------------------------
  const pages = ["/", "/topics", `/topics/${TOPIC}`, "/groups", `/groups/${GROUP}`, "/archive", "/compactor"];
  for (const p of pages) {
    const response = await page.goto(base + p);
    check(new URL(page.url()).pathname === "/login", `${p} without a token went to ${page.url()}`);
    check(!(await page.content()).includes("order-1"), `${p} without a token showed records`);
    check(response.status() === 200, `login page: ${response.status()}`);
  }
  await page.screenshot({ path: path.join(artifacts, "login.png"), fullPage: true });
  const csrf = await page.inputValue("input[name=csrf]");
  const actions = [
    ["/topics", { csrf, name: "sneaky", partitions: "1" }],
    [`/topics/${TOPIC}/produce`, { csrf, key: "sneaky", value: "sneaky" }],
    [`/topics/${TOPIC}/config`, { csrf, set: "retention.ms=1000" }],
    [`/topics/${TOPIC}/partitions`, { csrf, to: "8" }],
    [`/topics/${TOPIC}/delete`, { csrf, confirm: TOPIC }],
    [`/groups/${GROUP}/reset`, { csrf, topic: TOPIC, to: "earliest" }],
    [`/groups/${GROUP}/delete`, { csrf, confirm: GROUP }],
  ];
  for (const [p, form] of actions) {
    const response = await context.request.post(base + p, { form, maxRedirects: 0 });
    check(
      response.status() === 303 && response.headers()["location"] === "/login",
      `POST ${p} without a token answered ${response.status()} ${response.headers()["location"]}`
    );
  }
  // A wrong token is refused at sign-in and never kept.
  await page.fill("#token", "wrong-token-0123456789abcdef");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  check((await page.content()).includes("does not accept this token"), "a wrong token was not refused");
  expectRefusal(401);
  check(!(await context.cookies()).some((c) => c.name === "strata_token"), "a refused token was kept");
  const afterRefusal = describeTopic(TOPIC);
  check(afterRefusal.rows.length === 4, `the topic changed without a token: ${JSON.stringify(afterRefusal)}`);
  check(afterRefusal.records === "200", `records changed without a token: ${afterRefusal.records}`);
  check(!strata(["topic", "list"]).includes("sneaky"), "a topic was created without a token");
  log("without a token: every page goes to sign-in, every action is refused");

  // --- Sign in -----------------------------------------------------------------------------
  await page.fill("#token", token);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  check(new URL(page.url()).pathname === "/", `after sign-in: ${page.url()}`);
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === "strata_token");
  check(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", `token cookie: ${JSON.stringify(cookie)}`);
  check(!page.url().includes(token), "the token is in a URL");
  // Signed in, a form with a wrong CSRF token, or from another site, changes nothing.
  for (const [headers, form] of [
    [{}, { csrf: "not-the-csrf-token", name: "forged", partitions: "1" }],
    [{ Origin: "https://evil.example" }, { csrf, name: "forged", partitions: "1" }],
  ]) {
    const forged = await context.request.post(base + "/topics", { form, headers, maxRedirects: 0 });
    check(forged.status() === 403, `a forged form answered ${forged.status()}`);
  }
  check(!strata(["topic", "list"]).includes("forged"), "a forged form created a topic");
  check((await page.evaluate(() => document.cookie)).indexOf("strata_token") < 0, "scripts can read the token");

  // --- Overview: the agents as `strata cluster status` lists them ------------------------
  await visit("/", null);
  const status = strata(["cluster", "status"]);
  const agentRows = await tableRows(page, "#agents");
  check(agentRows.length === 3, `overview lists ${agentRows.length} agents`);
  for (const row of agentRows) {
    const line = status.split("\n").find((l) => l.startsWith(row[0] + "\t"));
    check(line, `agent ${row[0]} is not in strata cluster status:\n${status}`);
    const [, address, , partitions, role] = line.split("\t");
    check(row[1] === address && row[4] === role, `agent row ${row} vs ${line}`);
    check(row[3] === partitions, `agent ${row[0]} serves ${row[3]} partitions on the page, ${partitions} in the CLI`);
  }

  // --- Topic page: the figures of `strata topic describe` ----------------------------------
  await eventually("topic page equal to strata topic describe", 30, async () => {
    const before = describeTopic(TOPIC);
    await visit(`/topics/${TOPIC}`, null);
    const rows = await tableRows(page, "#partitions");
    const records = (await page.textContent("#record-count")).trim();
    const after = describeTopic(TOPIC);
    if (JSON.stringify(before) !== JSON.stringify(after)) return false;
    const cli = before.rows.map(([p, start, hw, owner, epoch, lso, bytes]) => [p, start, hw, lso, owner, epoch, bytes]);
    check(JSON.stringify(rows) === JSON.stringify(cli), `topic page ${JSON.stringify(rows)} vs CLI ${JSON.stringify(cli)}`);
    check(records === before.records, `records ${records} vs ${before.records}`);
    check(before.rows.some((r) => Number(r[6]) > 0), `no stored bytes: ${JSON.stringify(before.rows)}`);
    return true;
  });
  log("topic page equals strata topic describe");

  // --- A record produced with the CLI appears in the message browser ---------------------
  const marker = `cli-marker-${Date.now()}`;
  strata(["produce", TOPIC, "--key-separator", ":"], `marker-key:{"marker":"${marker}"}\n`);
  await visit(`/topics/${TOPIC}?format=json`, "topic");
  check((await page.textContent("#messages")).includes(marker), "the CLI's record is not in the message browser");
  for (const format of ["hex", "base64", "text"]) {
    await visit(`/topics/${TOPIC}?format=${format}&n=5`, null);
    check((await page.$$("#messages tr.message")).length === 5, `${format}: not 5 messages`);
  }
  log("the CLI's record shows in the message browser");

  // --- Create a topic and produce a record from the console ------------------------------
  await visit("/topics", "topics");
  await page.fill("#create-topic input[name=name]", "made-in-console");
  await page.fill("#create-topic input[name=partitions]", "2");
  await Promise.all([page.waitForNavigation(), page.click("#create-topic button")]);
  check(new URL(page.url()).pathname === "/topics/made-in-console", `after create: ${page.url()}`);
  check(describeTopic("made-in-console").rows.length === 2, "the console's topic does not have 2 partitions");
  await page.fill("#produce input[name=key]", "from-the-browser");
  await page.fill("#produce textarea[name=value]", '{"made":"in the console"}');
  await Promise.all([page.waitForNavigation(), page.click("#produce button")]);
  check((await page.textContent("#messages")).includes("in the console"), "the produced record is not shown");
  const made = describeTopic("made-in-console");
  check(made.records === "1", `the console's record: ${made.records} records`);
  const consumed = strata(["consume", "made-in-console", "--from-beginning", "--json", "--max-messages", "1"]);
  check(consumed.includes("from-the-browser") && consumed.includes("in the console"), `strata consume: ${consumed}`);
  // Alter configs and add partitions, read back with the CLI.
  await page.fill("#alter-config textarea[name=set]", "retention.ms=3600000");
  await Promise.all([page.waitForNavigation(), page.click("#alter-config button")]);
  const altered = strata(["topic", "describe", "made-in-console"]);
  check(/^ {2}retention\.ms=3600000\t\(topic\)$/m.test(altered), `retention.ms not set by the console:\n${altered}`);
  check((await page.textContent("#configs")).includes("3600000"), "the topic page does not show the altered config");
  await page.fill("#add-partitions input[name=to]", "3");
  await Promise.all([page.waitForNavigation(), page.click("#add-partitions button")]);
  check(describeTopic("made-in-console").rows.length === 3, "the console did not grow the topic to 3 partitions");
  check((await page.textContent("#partition-count")).trim() === "3", "the topic page does not show 3 partitions");
  // Deleting asks for the name.
  await page.fill("#delete-topic input[name=confirm]", "not-the-name");
  await Promise.all([page.waitForNavigation(), page.click("#delete-topic button")]);
  check((await page.content()).includes("to confirm its deletion"), "delete without confirmation was not refused");
  expectRefusal(400);
  check(strata(["topic", "list"]).includes("made-in-console"), "deleted without confirmation");
  await visit("/topics/made-in-console", null);
  await page.fill("#delete-topic input[name=confirm]", "made-in-console");
  await Promise.all([page.waitForNavigation(), page.click("#delete-topic button")]);
  check(new URL(page.url()).pathname === "/topics", `after delete: ${page.url()}`);
  check(!strata(["topic", "list"]).includes("made-in-console"), "the confirmed deletion did not delete");
  log("created a topic, produced a record, altered its configs, added partitions, and deleted it once confirmed, in the console");

  // --- Groups: figures, and the lag chart --------------------------------------------------
  const consume = () =>
    spawn(process.env.STRATA_BIN, ["consume", TOPIC, "--group", GROUP, "--from-beginning", "--follow"], {
      env: process.env,
      stdio: "ignore",
    });
  let consumer = consume();
  const lagOf = () => describeGroup(GROUP).reduce((sum, row) => sum + Number(row[4]), 0);
  await eventually("the consumer catches up", 60, async () => describeGroup(GROUP).length === 4 && lagOf() === 0);
  await eventually("group page equal to strata group describe", 30, async () => {
    const before = describeGroup(GROUP);
    await visit(`/groups/${GROUP}`, null);
    const rows = (await tableRows(page, "#lag")).map((r) => r.slice(0, 5));
    const after = describeGroup(GROUP);
    if (JSON.stringify(before) !== JSON.stringify(after)) return false;
    check(JSON.stringify(rows) === JSON.stringify(before), `group page ${JSON.stringify(rows)} vs CLI ${JSON.stringify(before)}`);
    return true;
  });
  log("group page equals strata group describe");
  await stop(consumer);
  for (let round = 0; round < 3; round++) {
    let more = "";
    for (let i = 0; i < 100; i++) more += `late-${round}-${i}:{"late":${i}}\n`;
    strata(["produce", TOPIC, "--key-separator", ":"], more);
    await sleep(6000);
  }
  check(lagOf() >= 300, `lag while stopped: ${lagOf()}`);
  consumer = consume();
  await eventually("the consumer catches up again", 60, async () => lagOf() === 0);
  await sleep(11000);
  await visit(`/groups/${GROUP}`, "group");
  const points = JSON.parse(await page.getAttribute("#chart-lag", "data-points")).map((p) => p[1]);
  const peak = points.indexOf(Math.max(...points));
  const rising = points.slice(0, peak + 1);
  check(points[peak] >= 300, `the chart's peak ${points[peak]} (points ${points})`);
  check(rising.some((v, i) => i > 0 && v > rising[i - 1]) && rising.filter((v) => v > 0).length >= 2, `no rise in ${points}`);
  check(points.slice(peak + 1).some((v) => v < points[peak]) && points[points.length - 1] === 0, `no fall in ${points}`);
  await stop(consumer);
  log(`lag chart rose to ${points[peak]} and fell to 0: ${points.join(" ")}`);
  await visit("/groups", "groups");

  // --- Reset offsets and delete, once the group is empty -----------------------------------
  await eventually("the group is empty", 60, async () => / members 0 /.test(strata(["group", "describe", GROUP])));
  await visit(`/groups/${GROUP}`, null);
  await page.selectOption("#reset-offsets select[name=to]", "earliest");
  await Promise.all([page.waitForNavigation(), page.click("#reset-offsets button")]);
  const reset = describeGroup(GROUP);
  check(reset.length === 4 && reset.every((row) => row[2] === "0" && row[4] === row[3]), `after reset to earliest: ${JSON.stringify(reset)}`);
  const resetRows = (await tableRows(page, "#lag")).map((r) => r.slice(0, 5));
  check(JSON.stringify(resetRows) === JSON.stringify(reset), `group page after reset ${JSON.stringify(resetRows)} vs CLI ${JSON.stringify(reset)}`);
  await page.fill("#delete-group input[name=confirm]", GROUP);
  await Promise.all([page.waitForNavigation(), page.click("#delete-group button")]);
  check(new URL(page.url()).pathname === "/groups", `after deleting the group: ${page.url()}`);
  check(!strata(["group", "list"]).includes(GROUP), "the confirmed deletion did not delete the group");
  log("reset the empty group's offsets to earliest and deleted it, in the console");

  // --- Every other page, and the other agents -------------------------------------------
  await visit("/", "overview");
  await eventually("the compactor shows", 60, async () => {
    await visit("/compactor", null);
    return (await page.$$("#compactors tbody tr")).length === 1;
  });
  await page.screenshot({ path: path.join(artifacts, "compactor.png"), fullPage: true });
  await visit("/archive", "archive");
  check((await page.$$(`section.archive[data-topic=${TOPIC}] tbody tr`)).length === 4, "archive page lacks the topic's partitions");
  for (const other of urls.slice(1)) {
    const response = await page.goto(other + "/topics");
    check(response.ok() && (await page.content()).includes(TOPIC), `${other} does not serve the console`);
  }

  // --- Plaintext is redirected to TLS (metrics aside) ----------------------------------
  const plain = await context.request.get(process.env.PLAIN_URL + "/topics", { maxRedirects: 0 });
  check(plain.status() === 307 && plain.headers()["location"].startsWith("https://"), `plaintext /topics: ${plain.status()}`);

  check(errors.length === 0, `console errors:\n${errors.join("\n")}`);
  await browser.close();
  log("console end-to-end: all checks passed");
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
