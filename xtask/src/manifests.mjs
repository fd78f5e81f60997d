// Checks Kubernetes manifests offline; run by `cargo xtask test` (xtask/src/manifests.rs)
// with node_modules from `cargo xtask setup`.
//
//   node manifests.mjs OUT.ts FILE.yaml...
//
// Every document is validated by the JSON-schema validator kubernetes-models generated from
// Kubernetes' OpenAPI (required fields, types, enums, formats), and written to OUT.ts as a
// literal of the kind's TypeScript type, so that tsc --strict then refuses any field the
// API does not have (a typo the schema validators let through). The spec of each
// PrometheusRule is written beside OUT.ts as NAME-rules.json, a Prometheus rule file for
// promtool. Exit status 1 on any error.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";

/// Where the model of each API group lives.
function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group === "" ? `kubernetes-models/${version}/${kind}` : `kubernetes-models/${group}/${version}/${kind}`;
}

const [out, ...files] = process.argv.slice(2);
let errors = 0;
const ts = [];
let n = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) console.error(`${file}: YAML: ${e.message}`);
      errors++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const where = `${file}: ${obj.kind ?? "?"} ${obj.metadata?.name ?? "?"}`;
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      console.error(`${where}: apiVersion and kind are required`);
      errors++;
      continue;
    }
    const path = modelPath(obj.apiVersion, obj.kind);
    let model;
    try {
      model = await import(path);
    } catch (e) {
      console.error(`${where}: no model for ${obj.apiVersion} ${obj.kind} (${path}): ${e.message}`);
      errors++;
      continue;
    }
    const Model = model[obj.kind];
    try {
      new Model(obj).validate();
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      errors++;
    }
    if (obj.kind === "PrometheusRule") {
      writeFileSync(join(dirname(out), `${obj.metadata.name}-rules.json`), JSON.stringify(obj.spec, null, 2));
    }
    ts.push(`import type { I${obj.kind} as T${n} } from "${path}";`);
    ts.push(`// ${where}`);
    ts.push(`export const doc${n}: T${n} = ${JSON.stringify(obj, null, 2)};`);
    n++;
  }
}
writeFileSync(out, ts.join("\n") + "\n");
console.error(`schema-validated ${n} documents from ${files.length} files; types in ${out}`);
process.exit(errors > 0 ? 1 : 0);
