// Mailgun's official Node.js SDK (mailgun.js), unchanged, against the local stack: one phase per run,
// its answers printed as one JSON object for tests/e2e/test_mailgun_js.py to check.
import Mailgun from "mailgun.js";

const phase = process.argv[2];
const { API_URL, API_KEY, DOMAIN, READER, OTHER } = process.env;
const mg = new Mailgun(FormData).client({ username: "api", key: API_KEY, url: API_URL });

async function send() {
  return {
    sent: await mg.messages.create(DOMAIN, {
      from: `Newsletter <news@${DOMAIN}>`,
      to: [READER, OTHER],
      subject: "Hello %recipient.name%",
      html: "<html><body><p>Hi %recipient.name%</p></body></html>",
      "o:tag": ["js-launch"],
      "o:tracking-opens": "yes",
      // how a framework's backend sends per-recipient metadata: a key with ":" in recipient-variables
      "v:cust": "%recipient.v:cust%",
      "recipient-variables": JSON.stringify({
        [READER]: { name: "Ann", "v:cust": "c-1" },
        [OTHER]: { name: "Bob", "v:cust": "c-2" },
      }),
    }),
  };
}

async function read() {
  const day = 24 * 3600 * 1000;
  return {
    events: await mg.events.get(DOMAIN, { event: "accepted OR delivered", limit: 50 }),
    permanent: await mg.events.get(DOMAIN, { severity: "permanent" }),
    domain: await mg.domains.get(DOMAIN),
    webhook: await mg.webhooks.create(DOMAIN, "accepted", "https://hooks.example.net/accepted"),
    webhooks: await mg.webhooks.list(DOMAIN, {}),
    stats: await mg.stats.getDomain(DOMAIN, { event: ["accepted", "delivered", "failed", "opened"], duration: "1d" }),
    metrics: await mg.metrics.getAccount({
      start: new Date(Date.now() - day),
      end: new Date(),
      resolution: "hour",
      metrics: ["accepted_count", "unique_opened_count"],
      include_aggregates: true,
    }),
    tags: await mg.domains.domainTags.list(DOMAIN),
    tag: await mg.domains.domainTags.get(DOMAIN, "js-launch"),
  };
}

async function attempt(call) {
  try {
    return await call();
  } catch (error) {
    return { error: { message: error.message, status: error.status, details: error.details } };
  }
}

// What an app that manages its account does: the Logs API, account tags, domain settings, certificates.
async function manage() {
  const day = 24 * 3600 * 1000;
  const onlyThisDomain = {
    AND: [{ attribute: "domain", comparator: "=", values: [{ label: DOMAIN, value: DOMAIN }] }],
  };
  const logs = await mg.logs.list({
    start: new Date(Date.now() - day),
    end: new Date(Date.now() + 60 * 1000),
    events: ["accepted"],
    include_totals: true,
    pagination: { limit: 1, sort: "timestamp:asc" },
    filter: onlyThisDomain,
  });
  const nextPage = await mg.logs.list({
    start: new Date(Date.now() - day),
    end: new Date(Date.now() + 60 * 1000),
    events: ["accepted"],
    include_totals: true,
    pagination: { limit: 1, sort: "timestamp:asc", token: logs.pagination.next },
    filter: onlyThisDomain,
  });
  return {
    logs,
    nextPage,
    accountTags: await mg.tags.list({ tag: "js-", pagination: { limit: 10, include_total: true } }),
    described: await mg.tags.update("js-launch", "Launch mail, sent with mailgun.js"),
    describedTag: await mg.domains.domainTags.get(DOMAIN, "js-launch"),
    tagLimits: await mg.tags.limits(),
    updated: await mg.domains.update(DOMAIN, { require_tls: true, wildcard: false }),
    refused: await attempt(() => mg.domains.update(DOMAIN, { wildcard: true })),
    certificate: await mg.domains.domainTracking.get(`email.${DOMAIN}`),
    generate: await attempt(() => mg.domains.domainTracking.generate(`email.${DOMAIN}`)),
    deleted: await mg.tags.destroy("js-launch"),
    deletedTag: await attempt(() => mg.domains.domainTags.get(DOMAIN, "js-launch")),
  };
}

const phases = { send, read, manage };
let out;
try {
  out = await phases[phase]();
} catch (error) {
  out = { error: { message: error.message, status: error.status, details: error.details } };
}
console.log(JSON.stringify(out));
