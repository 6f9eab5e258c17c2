// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule)
// against the schemas of the operator's CRDs as published in the npm
// package @kubernetes-models/prometheus-operator (version pinned in
// package.json / package-lock.json beside this file): types, required
// fields, enums and patterns. Unknown fields are not rejected (the schemas
// do not close objects).
//
//   node crd-validate.mjs NODE_MODULES_DIR < objects.json
//
// Reads a JSON array of objects; exits 1 naming each invalid one.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
const v1 = await import(
  pathToFileURL(path.join(dir, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js")).href
);
const docs = JSON.parse(fs.readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const Kind = doc.apiVersion === "monitoring.coreos.com/v1" ? v1[doc.kind] : undefined;
  if (typeof Kind !== "function") {
    bad++;
    console.error(`${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  try {
    new Kind(doc).validate();
    console.log(`${name}: valid`);
  } catch (e) {
    bad++;
    console.error(`${name}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
