// An Express 4 application with its default routing (case-insensitive,
// non-strict trailing slash), as Node APIs are commonly written. Prints
// `PORT n` once listening on 127.0.0.1; answers `handler=NAME path=PATH`.
// Used by tests/path_backends.rs.
const express = require("express");

const app = express();
const answer = (name) => (req, res) => {
  let path;
  try {
    path = decodeURIComponent(req.path);
  } catch (e) {
    path = req.path;
  }
  res.type("text/plain").send(`handler=${name} path=${path}`);
};
app.get("/account", answer("account"));
app.post("/pay", answer("pay"));
app.get("/admin/*", answer("admin"));
app.all("*", answer("other"));
app.use((err, req, res, next) => res.status(400).type("text/plain").send("handler=error"));

const server = app.listen(0, "127.0.0.1", () => {
  console.log(`PORT ${server.address().port}`);
});
