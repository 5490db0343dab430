// Offline validation of Kubernetes manifests (run by scripts/k8s-validate.sh,
// which installs the pinned packages next to a copy of this file).
//
//   node validate.mjs [--dump] FILE...
//
// Every YAML document must parse, name a known apiVersion/kind, and pass:
//  1. the JSON schema of its kind, from the `kubernetes-models` package (built
//     from the Kubernetes OpenAPI spec: types, required fields, enums, formats)
//     and `@kubernetes-models/keda` for KEDA's ScaledObject (its CRD schema);
//  2. a strict check that every field is one Kubernetes knows (as kubeconform
//     -strict, or kubectl's server-side field validation): the field lists of
//     the API types come from @kubernetes/client-node's generated models. A
//     misspelt `readinesProbe` passes the schema (it allows unknown fields) but
//     not this check. For KEDA's ScaledObject the field lists come from the
//     type declarations (.d.ts) of @kubernetes-models/keda, generated from
//     KEDA's CRD; its metadata is checked against the core ObjectMeta.
// --dump prints the parsed documents as JSON ([{file, index, doc}]) instead.
// Exit status: 0 all valid, 1 any invalid, 2 usage.
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseAllDocuments } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));
const MODELS = join(HERE, "client-node", "package", "dist", "gen", "models");

// apiVersion/kind -> module exporting the model class (with .validate()).
const KINDS = {
  "v1/Namespace": "kubernetes-models/v1/Namespace",
  "v1/ConfigMap": "kubernetes-models/v1/ConfigMap",
  "v1/Secret": "kubernetes-models/v1/Secret",
  "v1/Service": "kubernetes-models/v1/Service",
  "v1/Endpoints": "kubernetes-models/v1/Endpoints",
  "v1/ServiceAccount": "kubernetes-models/v1/ServiceAccount",
  "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment",
  "apps/v1/StatefulSet": "kubernetes-models/apps/v1/StatefulSet",
  "autoscaling/v2/HorizontalPodAutoscaler": "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget",
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
};
// CRD kinds: root interface, and the folder of its package's declarations.
const CRDS = {
  "keda.sh/v1alpha1/ScaledObject": {
    root: "IScaledObject",
    dir: join(HERE, "node_modules", "@kubernetes-models", "keda", "keda.sh", "v1alpha1"),
  },
};

// Field lists of a CRD package's interfaces, read from its .d.ts files:
// `export interface IName {` then one `"field"?: Type;` per line (an inline
// object type spans lines: its fields are not checked), and the aliases of
// `export type { IName as ILongName }`.
const crdTypes = new Map();
function loadCrdTypes(dir) {
  if (crdTypes.has(dir)) return crdTypes.get(dir);
  const types = new Map();
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".d.ts"))) {
    const text = readFileSync(join(dir, f), "utf8");
    const m = /export interface (I\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)\n\}/.exec(text);
    if (!m) continue;
    const fields = new Map();
    for (const line of m[2].split("\n")) {
      const fm = /^ {4}"([^"]+)"\??: (.*?);?$/.exec(line);
      if (fm) fields.set(fm[1], fm[2].replace(/;$/, ""));
    }
    types.set(m[1], fields);
    for (const a of text.matchAll(/export type \{ (I\w+) as (I\w+)/g)) types.set(a[2], types.get(a[1]) || fields);
  }
  crdTypes.set(dir, types);
  return types;
}

async function strictCrd(value, type, path, errors, types) {
  if (value === null || value === undefined || typeof value !== "object") return;
  const arr = /^Array<(\w+)>$/.exec(type);
  if (arr) {
    if (Array.isArray(value))
      for (let i = 0; i < value.length; i++) await strictCrd(value[i], arr[1], `${path}[${i}]`, errors, types);
    return;
  }
  if (type === "IIoK8sApimachineryPkgApisMetaV1ObjectMeta") return strict(value, "V1ObjectMeta", path, errors);
  const fields = types.get(type);
  if (!fields || Array.isArray(value)) return; // a leaf or an inline object type
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) errors.push(`${path}.${k}: unknown field (not in ${type})`);
    else await strictCrd(v, fields.get(k), `${path}.${k}`, errors, types);
  }
}

const typeMaps = new Map();
async function typeMap(name) {
  if (typeMaps.has(name)) return typeMaps.get(name);
  const file = join(MODELS, name + ".js");
  let map = null;
  if (/^[A-Za-z0-9]+$/.test(name) && existsSync(file)) {
    const mod = await import(pathToFileURL(file).href);
    map = mod[name].getAttributeTypeMap();
  }
  typeMaps.set(name, map);
  return map;
}

async function strict(value, type, path, errors) {
  if (value === null || value === undefined) return;
  let m = /^Array<(.+)>$/.exec(type);
  if (m) {
    if (Array.isArray(value))
      for (let i = 0; i < value.length; i++) await strict(value[i], m[1], `${path}[${i}]`, errors);
    return;
  }
  m = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (m) {
    if (typeof value === "object" && !Array.isArray(value))
      for (const [k, v] of Object.entries(value)) await strict(v, m[1], `${path}.${k}`, errors);
    return;
  }
  const map = await typeMap(type);
  if (!map || typeof value !== "object" || Array.isArray(value)) return; // a leaf type
  const known = new Map(map.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!known.has(k)) errors.push(`${path}.${k}: unknown field (not in ${type})`);
    else await strict(v, known.get(k), `${path}.${k}`, errors);
  }
}

function rootType(apiVersion, kind) {
  const version = apiVersion.split("/").pop();
  return version.charAt(0).toUpperCase() + version.slice(1) + kind;
}

async function validateDoc(doc) {
  const errors = [];
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return ["not a mapping"];
  const { apiVersion, kind } = doc;
  if (typeof apiVersion !== "string" || typeof kind !== "string")
    return ["apiVersion and kind are required"];
  const key = `${apiVersion}/${kind}`;
  if (!KINDS[key]) return [`unknown apiVersion/kind ${key} (known: ${Object.keys(KINDS).join(", ")})`];
  if (!doc.metadata || typeof doc.metadata.name !== "string" || !doc.metadata.name)
    errors.push("metadata.name is required");
  const mod = await import(KINDS[key]);
  const Model = mod[kind];
  try {
    new Model(doc).validate();
  } catch (e) {
    for (const line of String(e.message).split(", ")) errors.push(`schema: ${line}`);
  }
  if (CRDS[key]) {
    const types = loadCrdTypes(CRDS[key].dir);
    if (!types.has(CRDS[key].root)) errors.push(`internal: no declarations for ${CRDS[key].root}`);
    else await strictCrd(doc, CRDS[key].root, kind, errors, types);
  } else {
    await strict(doc, rootType(apiVersion, kind), kind, errors);
  }
  return errors;
}

const args = process.argv.slice(2);
const dump = args[0] === "--dump";
const files = dump ? args.slice(1) : args;
if (files.length === 0) {
  console.error("usage: k8s-validate [--dump] FILE...");
  process.exit(2);
}
let bad = 0, ndocs = 0;
const out = [];
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    console.error(`${file}: cannot read: ${e.message}`);
    bad++;
    continue;
  }
  const docs = parseAllDocuments(text, { prettyErrors: true });
  if (!Array.isArray(docs)) {
    console.error(`${file}: not a YAML stream`);
    bad++;
    continue;
  }
  let index = 0;
  for (const d of docs) {
    index++;
    if (d.errors.length) {
      for (const e of d.errors) console.error(`${file}: document ${index}: YAML: ${e.message.split("\n")[0]}`);
      bad++;
      continue;
    }
    const doc = d.toJS();
    if (doc === null) continue; // an empty document (a trailing ---)
    ndocs++;
    if (dump) {
      out.push({ file, index, doc });
      continue;
    }
    const errors = await validateDoc(doc);
    const what = `${doc.kind || "?"}/${(doc.metadata && doc.metadata.name) || "?"}`;
    if (errors.length) {
      bad++;
      for (const e of errors) console.error(`${file}: document ${index} (${what}): ${e}`);
    }
  }
}
if (dump) {
  console.log(JSON.stringify(out));
} else if (bad === 0) {
  console.log(`k8s-validate: ${ndocs} documents in ${files.length} files valid`);
}
process.exit(bad ? 1 : 0);
