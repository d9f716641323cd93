// Validate a .glb with the Khronos glTF validator and print its report as JSON on stdout.
// Usage: node tests/validate_gltf.cjs FILE.glb   (gltf-validator resolved through NODE_PATH)
const fs = require("fs");
const validator = require("gltf-validator");

const file = process.argv[2];
const data = new Uint8Array(fs.readFileSync(file));
validator
  .validateBytes(data, { uri: file, maxIssues: 1000, format: "glb" })
  .then((report) => {
    process.stdout.write(JSON.stringify(report));
  })
  .catch((err) => {
    process.stderr.write(`validator failed: ${err}\n`);
    process.exit(3);
  });
