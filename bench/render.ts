import { readFileSync, writeFileSync } from 'node:fs';
import { evaluateTargets, markdownReport, svgChart, type BenchReport } from './lib/report.js';

/** Re-renders the Markdown and SVG of saved results: node --import tsx bench/render.ts bench/results/X.json [...] */
for (const file of process.argv.slice(2)) {
  const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  report.targets = evaluateTargets(report.runs);
  const stem = file.replace(/\.json$/, '');
  writeFileSync(`${stem}.md`, `${markdownReport(report)}\n`);
  writeFileSync(`${stem}.svg`, svgChart(report));
  process.stdout.write(`${stem}.md, ${stem}.svg\n`);
}
