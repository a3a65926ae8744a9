// bench_e2e.py's Probot bot: what a team writes with Probot 14, the Node framework for
// GitHub Apps. Same work as floor_bot.py: verify, decode, comment once per
// `issues.opened` through the API (installation tokens fetched and cached by Probot).
// Probot answers a delivery after its handlers have run (200, the comment posted); it
// journals nothing, so a crash loses the deliveries it is handling.
//
// Configured as any Probot app, from the environment: APP_ID, PRIVATE_KEY_PATH,
// WEBHOOK_SECRET, and GHE_HOST + GHE_PROTOCOL=http for the fake GitHub (Probot calls
// `${GHE_PROTOCOL}://${GHE_HOST}/api/v3`, which FakeGitHub serves); PORT to listen on
// 127.0.0.1. Install with `make bench-probot`; bench_e2e.py starts it.
import { createServer } from "node:http";
import { createNodeMiddleware, createProbot, ProbotOctokit } from "probot";

// Probot's Octokit with @octokit/plugin-throttling off: throttled, an installation's
// writes would go one a second. A function default, because Probot merges its own
// throttle options over a plain object's (the retry plugin stays on, as by default).
const Octokit = ProbotOctokit.defaults((options) => ({
  ...options,
  throttle: { ...options.throttle, enabled: false },
}));

const app = (probot) => {
  probot.on("issues.opened", (context) =>
    context.octokit.rest.issues.createComment(
      context.issue({ body: `Thanks for opening this issue! ${context.id}` }),
    ),
  );
};

const middleware = await createNodeMiddleware(app, {
  probot: createProbot({ overrides: { Octokit } }),
  webhooksPath: "/webhooks",
});
createServer((request, response) =>
  middleware(request, response, () => response.writeHead(404).end()),
).listen(Number(process.env.PORT), "127.0.0.1", () => console.log("ready"));
