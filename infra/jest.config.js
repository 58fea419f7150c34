// Jest for the CDK app: TypeScript through ts-jest, tests in infra/test.
module.exports = {
  rootDir: __dirname,
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }],
  },
  // Synthesizing a stack takes a few seconds on two cores.
  testTimeout: 120000,
};
