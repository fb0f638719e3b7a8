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

let out;
try {
  out = phase === "send" ? await send() : await read();
} catch (error) {
  out = { error: { message: error.message, status: error.status, details: error.details } };
}
console.log(JSON.stringify(out));
