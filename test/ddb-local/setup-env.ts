/**
 * Per-file setup of `npm run test:ddb-local`: points every service the file starts at the run's
 * DynamoDB Local (S3 stays embedded: s3rver), each with a table of its own (LOCAL_FRESH_TABLE), so
 * parallel files never share state. `TEST_DYNAMODB_ENDPOINT` tells tests which engine they are on
 * (see ./engine.ts).
 */
import { inject } from 'vitest';

const endpoint = inject('dynamodbLocalEndpoint');
process.env['TEST_DYNAMODB_ENDPOINT'] = endpoint;
process.env['AWS_ENDPOINT_URL_DYNAMODB'] = endpoint;
process.env['LOCAL_FRESH_TABLE'] = '1';
