// The page: choose or drop images, see each cut-out beside its original, download the PNG, read the
// backend and milliseconds. A bad file gets its own message; nothing stops the page.

import { backends, cutout, load, site } from './u2deploy.mjs';

const $ = (id) => document.getElementById(id);
const status = (text, warn = false) => {
  $('status').textContent = text;
  $('status').className = warn ? 'warn' : '';
};
let queue = Promise.resolve();

function options() {
  return { backend: $('backend').value };
}

async function start() {
  const s = await site();
  const [h, w] = s.spec.input_size;
  $('about').textContent = `${s.artifact}: U²-Net${s.spec.variant === 'small' ? '†' : ''} ${s.spec.precision.toUpperCase()} ` +
    `at ${h}×${w}, onnxruntime-web ${s.runtime.onnxruntime_web ?? ''}.`;
  for (const b of await backends()) {
    if (b !== 'wasm') $('backend').append(new Option(b, b));
  }
  $('threads').textContent = crossOriginIsolated ? `${navigator.hardwareConcurrency} cores`
    : 'one thread: the page is not cross-origin isolated (serve it with COOP/COEP headers)';
  $('threads').className = crossOriginIsolated ? '' : 'warn';
  await warm();
}

async function warm() {
  status(`Loading the model on ${$('backend').value}…`);
  try {
    const run = await load(options());
    status(`Ready: ${run.backend}, ${run.threads} thread${run.threads === 1 ? '' : 's'}, ` +
           `session created in ${Math.round(run.sessionMs)} ms.`);
  } catch (err) {
    status(`Cannot load the model on ${$('backend').value}: ${err.message}`, true);
  }
}

function add(files) {
  for (const file of files) queue = queue.then(() => show(file));
}

async function show(file) {
  const box = document.createElement('section');
  box.className = 'result';
  box.dataset.state = 'working';
  const title = document.createElement('h2');
  title.textContent = file.name;
  box.append(title);
  $('results').prepend(box);
  status(`Working on ${file.name}…`);
  try {
    const result = await cutout(file, options());
    const original = new Image();
    original.src = URL.createObjectURL(file);
    original.alt = `${file.name}, original`;
    const canvas = document.createElement('canvas');
    canvas.width = result.width;
    canvas.height = result.height;
    canvas.className = 'cut';
    canvas.getContext('2d').putImageData(result.imageData, 0, 0);
    const png = await result.png();
    const link = document.createElement('a');
    link.href = URL.createObjectURL(png);
    link.download = file.name.replace(/\.[^.]*$/, '') + '.png';
    link.textContent = `Download ${link.download}`;
    const meta = document.createElement('p');
    meta.className = 'meta';
    meta.dataset.ms = String(result.ms);
    meta.append(`${result.width}×${result.height} · ${result.backend} · ${Math.round(result.ms)} ms · `, link);
    box.append(original, canvas, meta);
    box.dataset.state = 'done';
    status(`Done: ${file.name} in ${Math.round(result.ms)} ms.`);
  } catch (err) {
    const p = document.createElement('p');
    p.className = 'error';
    p.setAttribute('role', 'alert');
    p.textContent = err.message;
    box.append(p);
    box.dataset.state = 'error';
    status(`${file.name}: not processed.`, true);
  }
}

$('files').addEventListener('change', (e) => { add([...e.target.files]); e.target.value = ''; });
$('backend').addEventListener('change', () => { queue = queue.then(warm); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); add([...e.dataTransfer.files]); });
window.addEventListener('unhandledrejection', (e) => status(`Error: ${e.reason?.message ?? e.reason}`, true));
start().catch((err) => status(`Cannot start: ${err.message}`, true));
