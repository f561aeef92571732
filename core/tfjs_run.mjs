// Runs TF.js graph models in node for core/export_tfjs.py (one process for many models).
//
//   node tfjs_run.mjs TOOLCHAIN_DIR JOBS.json RESULTS.jsonl
//
// TOOLCHAIN_DIR holds node_modules/@tensorflow/tfjs (made by `python -m core.export_tfjs
// setup`). JOBS.json is {"mode": "run" | "ones", "jobs": [...]}; each job is
//   {"model": dir, "inputs": [{"name", "dtype", "shape", "file"}], "outputs": [names],
//    "out_prefix": path}   (mode "run": inputs are raw little-endian buffers), or
//   {"model": dir}         (mode "ones": every input is ones, unknown dimensions 1).
// One JSON line per job is appended to RESULTS.jsonl (jobs already answered there are
// skipped, so a crashed run is restarted after the job that killed it):
//   {"outputs": [{"file", "dtype", "shape"}]} | {"ok": true} | {"error": message}.
// Models always run with executeAsync (models with control flow need it).
import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';

const [toolchain, jobsFile, resultsFile] = process.argv.slice(2);
const require = createRequire(path.join(toolchain, 'package.json'));
const {log, warn} = console;
console.log = console.warn = () => {};    // tfjs greets node users
const tf = require('@tensorflow/tfjs');
console.log = log;
console.warn = (...args) => {             // executeAsync on a model without control flow
  if (!String(args[0]).includes('did not contain any nodes with control flow')) warn(...args);
};
await tf.setBackend('cpu');

const ARRAYS = {float32: Float32Array, int32: Int32Array, bool: Uint8Array};

function load(dir) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const specs = [], buffers = [];
  for (const group of json.weightsManifest || []) {
    specs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const artifacts = {
    modelTopology: json.modelTopology, format: json.format,
    generatedBy: json.generatedBy, convertedBy: json.convertedBy,
    signature: json.signature, userDefinedMetadata: json.userDefinedMetadata,
    modelInitializer: json.modelInitializer, initializerSignature: json.initializerSignature,
    weightSpecs: specs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
  };
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'jaxtf.json'), 'utf8'));
  return tf.loadGraphModel({load: async () => artifacts}).then((model) => ({model, info}));
}

function tensorFromFile(spec) {
  const buf = fs.readFileSync(spec.file);
  const bytes = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  return tf.tensor(new ARRAYS[spec.dtype](bytes), spec.shape, spec.dtype);
}

function ones(spec) {
  const shape = (spec.shape || []).map((d) => (d < 0 ? 1 : d));
  return tf.ones(shape, spec.dtype);
}

function writeTensor(t, file) {
  const Array_ = ARRAYS[t.dtype];
  if (Array_ === undefined) throw new Error(`output of dtype ${t.dtype}`);
  let data = t.dataSync();
  // a tensor's storage need not match its dtype: the cpu backend's Cast int32 -> float32
  // keeps the Int32Array (2**31 - 1 stays unrounded); store it as the dtype says
  if (!(data instanceof Array_)) data = Array_.from(data);
  fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return {file, dtype: t.dtype, shape: t.shape};
}

async function runJob(mode, job) {
  const {model, info} = await load(job.model);
  try {
    const feeds = {};
    if (mode === 'ones') {
      for (const spec of info.inputs) if (spec.in_graph !== false) feeds[spec.name] = ones(spec);
    } else {
      for (const spec of job.inputs) feeds[spec.name] = tensorFromFile(spec);
    }
    const names = mode === 'ones' ? info.outputs.map((o) => o.name) : job.outputs;
    let outs = await model.executeAsync(feeds, names);
    if (!Array.isArray(outs)) outs = [outs];
    if (outs.length !== names.length) {
      throw new Error(`${outs.length} outputs for ${names.length} names`);
    }
    const result = mode === 'ones' ? {ok: true} :
      {outputs: outs.map((t, i) => writeTensor(t, `${job.out_prefix}${i}.bin`))};
    for (const t of Object.values(feeds)) t.dispose();
    for (const t of outs) t.dispose();
    return result;
  } finally {
    model.dispose();
  }
}

const {mode, jobs} = JSON.parse(fs.readFileSync(jobsFile, 'utf8'));
const done = fs.readFileSync(resultsFile, 'utf8').split('\n').filter((l) => l).length;
for (const job of jobs.slice(done)) {
  let result;
  try {
    result = await runJob(mode, job);
  } catch (e) {
    result = {error: String(e && e.message ? e.message : e).slice(0, 2000)};
  }
  fs.appendFileSync(resultsFile, JSON.stringify(result) + '\n');
}
