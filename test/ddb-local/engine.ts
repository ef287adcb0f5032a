/** Which DynamoDB engine this test run uses: dynalite (embedded, `npm test`) or DynamoDB Local (`npm run test:ddb-local`). */

/** The DynamoDB Local endpoint of a `test:ddb-local` run, or undefined on dynalite. */
export const dynamodbLocalEndpoint: string | undefined = process.env['TEST_DYNAMODB_ENDPOINT'] || undefined;

export const onDynamoDbLocal = dynamodbLocalEndpoint !== undefined;
