/**
 * The OpenAPI 3.0.3 description of tsvmm's REST API (issue #5): Firecracker's API on a Unix
 * socket, restricted to the endpoints tsvmm serves and to the limits tsvmm's parsers enforce.
 *
 * Source: Firecracker's own swagger, src/firecracker/swagger/firecracker.yaml (Swagger 2.0,
 * version FIRECRACKER_SWAGGER_VERSION below). Field names, enums, descriptions and status codes
 * are copied from there; `definitions` became `components.schemas` and body parameters became
 * `requestBody`. The document is the single source for request-validator.ts, which checks
 * request bodies with it and lets conformance tests check every answer against it.
 *
 * Where tsvmm's parsers (src/api/config/*.ts) and Firecracker's swagger disagree, the document
 * follows the parser (that is what the server will do) and says why next to the schema. Limits
 * are imported from the parsers' modules where they export them, so the two cannot drift.
 *
 * Conventions, all following Firecracker's serde types and the parsers:
 * - every object has `additionalProperties: false` (Firecracker's types use deny_unknown_fields;
 *   the parsers report unknown fields);
 * - every optional field is `nullable: true`: serde reads `null` as an absent `Option`, and so do
 *   the parsers (ObjectReader.has). A nullable `$ref` is written `{ allOf: [$ref], nullable: true }`
 *   because OpenAPI 3.0 ignores the siblings of `$ref`; a nullable `enum` lists `null`, as 3.0.3
 *   requires;
 * - every integer has `minimum` and `maximum`; where Firecracker has a u64 the maximum is
 *   2^53 - 1, the largest integer a JSON number carries exactly (rate-limiter.ts U64_SAFE);
 * - strings the parsers require non-empty have `minLength: 1` (Firecracker's swagger has no
 *   string limits at all).
 *
 * Vendor extensions (OpenAPI "specification extensions"), for rules JSON Schema cannot state and
 * request-validator.ts enforces:
 * - `x-tsvmm-max-utf8-bytes`: a limit in UTF-8 bytes (maxLength counts characters; the kernel
 *   limits bytes). `maxLength` is set too, as the looser bound other tools understand;
 * - `x-tsvmm-pattern-hint`: what `pattern` means, for the error message;
 * - `x-tsvmm-renamed-fields`: fields older Firecracker versions used, with the note the parser
 *   gives instead of "did you mean";
 * - `x-tsvmm-enum-case-insensitive` and `x-tsvmm-enum-aliases`: a request enum matched ignoring
 *   case / with extra spellings (the logger level, as Firecracker parses it). Responses always
 *   carry the canonical spelling.
 * - `minProperties` counts members that are not null (null means absent, as above).
 */
import {
  BOOT_ARGS_MAX_BYTES,
  CACHE_TYPES,
  CPU_TEMPLATES,
  GUEST_CID_RANGE,
  HOST_DEV_NAME_MAX_BYTES,
  HUGE_PAGES,
  IO_ENGINES,
  LOG_LEVELS,
  MEM_SIZE_MIB_RANGE,
  MTU_RANGE,
  UDS_PATH_MAX_BYTES,
  VCPU_COUNT_RANGE,
} from '../config/limits.js';

/** The version of Firecracker's swagger this document was modelled on. */
export const FIRECRACKER_SWAGGER_VERSION = '1.17.0-dev';

/** The prefix of every `$ref` in the document. */
export const SCHEMA_REF_PREFIX = '#/components/schemas/';

export type JsonPrimitive = string | number | boolean | null;
export type SchemaType = 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';

/** The subset of OpenAPI 3.0 Schema Object this document uses (and request-validator.ts implements). */
export interface SchemaObject {
  readonly $ref?: string;
  readonly type?: SchemaType;
  readonly title?: string;
  readonly description?: string;
  readonly nullable?: boolean;
  readonly readOnly?: boolean;
  readonly format?: string;
  readonly default?: JsonPrimitive;
  readonly example?: JsonPrimitive;
  readonly enum?: readonly JsonPrimitive[];
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly pattern?: string;
  readonly items?: SchemaObject;
  readonly maxItems?: number;
  readonly properties?: Readonly<Record<string, SchemaObject>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean;
  readonly minProperties?: number;
  readonly allOf?: readonly SchemaObject[];
  readonly 'x-tsvmm-max-utf8-bytes'?: number;
  readonly 'x-tsvmm-pattern-hint'?: string;
  readonly 'x-tsvmm-renamed-fields'?: Readonly<Record<string, string>>;
  readonly 'x-tsvmm-enum-case-insensitive'?: boolean;
  readonly 'x-tsvmm-enum-aliases'?: Readonly<Record<string, string>>;
}

export interface MediaTypeObject {
  readonly schema: SchemaObject;
}

/** tsvmm speaks JSON only, like Firecracker (`consumes`/`produces: application/json`). */
export interface JsonContent {
  readonly 'application/json': MediaTypeObject;
}

export interface ResponseObject {
  readonly description: string;
  readonly content?: JsonContent;
}

export interface RequestBodyObject {
  readonly description: string;
  readonly required: boolean;
  readonly content: JsonContent;
}

export interface ParameterObject {
  readonly name: string;
  readonly in: 'path';
  readonly description: string;
  readonly required: true;
  readonly schema: SchemaObject;
}

export interface OperationObject {
  readonly operationId: string;
  readonly summary: string;
  readonly description?: string;
  readonly parameters?: readonly ParameterObject[];
  readonly requestBody?: RequestBodyObject;
  /** Status code ("200", "204", "400") or "default" → response. */
  readonly responses: Readonly<Record<string, ResponseObject>>;
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

export type PathItemObject = { readonly [M in HttpMethod]?: OperationObject };

export interface OpenApiDocument {
  readonly openapi: '3.0.3';
  readonly info: {
    readonly title: string;
    readonly description: string;
    readonly version: string;
    readonly license: { readonly name: string; readonly url: string };
    readonly 'x-firecracker-swagger-version': string;
  };
  readonly servers: readonly { readonly url: string; readonly description: string }[];
  readonly paths: Readonly<Record<string, PathItemObject>>;
  readonly components: { readonly schemas: Readonly<Record<string, SchemaObject>> };
}

// ---------------------------------------------------------------------------------------------
// Building blocks. Plain functions returning plain objects, so the result is JSON as it stands.

function ref(name: string): SchemaObject {
  return { $ref: `${SCHEMA_REF_PREFIX}${name}` };
}

/** An optional object field: absent, null, or the named schema. */
function nullableRef(name: string, description?: string): SchemaObject {
  return description === undefined ? { allOf: [ref(name)], nullable: true } : { description, allOf: [ref(name)], nullable: true };
}

/** An optional enum field: OpenAPI 3.0.3 wants `null` in the enum of a nullable schema. */
function nullableEnum(values: readonly string[], fallback: string, description: string): SchemaObject {
  return { type: 'string', description, enum: [...values, null], nullable: true, default: fallback };
}

function json(schema: SchemaObject): JsonContent {
  return { 'application/json': { schema } };
}

/** The 400 and `default` answers every operation has: tsvmm answers every failure with an Error. */
function errorResponses(badInput: string): Record<string, ResponseObject> {
  return {
    '400': { description: badInput, content: json(ref('Error')) },
    default: { description: 'Internal server error', content: json(ref('Error')) },
  };
}

function getOperation(operationId: string, summary: string, description: string | undefined, schema: string, ok: string): OperationObject {
  return {
    operationId,
    summary,
    ...(description === undefined ? {} : { description }),
    responses: {
      '200': { description: ok, content: json(ref(schema)) },
      // Firecracker's GETs declare only 200 and default; tsvmm also answers 400 to a GET it
      // cannot serve (a GET with a body, as Firecracker's router refuses too).
      ...errorResponses('The request is malformed (for example it has a body)'),
    },
  };
}

interface UpdateSpec {
  operationId: string;
  summary: string;
  description?: string;
  /** The path parameter, for /drives/{drive_id} and /network-interfaces/{iface_id}. */
  parameter?: ParameterObject;
  bodyDescription: string;
  schema: string;
  done: string;
  badInput: string;
}

/** A PUT or PATCH: a required JSON body, 204 with no body on success. */
function updateOperation(spec: UpdateSpec): OperationObject {
  return {
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description === undefined ? {} : { description: spec.description }),
    ...(spec.parameter === undefined ? {} : { parameters: [spec.parameter] }),
    requestBody: { description: spec.bodyDescription, required: true, content: json(ref(spec.schema)) },
    responses: { '204': { description: spec.done }, ...errorResponses(spec.badInput) },
  };
}

function idParameter(name: string, description: string): ParameterObject {
  return {
    name,
    in: 'path',
    description: `${description}. Must equal the body's ${name}.`,
    required: true,
    // The parsers take any non-empty id. Firecracker also limits ids to 64 alphanumeric or '_'
    // characters; tsvmm's config file parser does not, and the API takes what the file takes.
    schema: { type: 'string', minLength: 1 },
  };
}

/** A u64 in Firecracker, as far as a JSON number holds it exactly (rate-limiter.ts U64_SAFE). */
function u64(description: string, nullable: boolean): SchemaObject {
  return {
    type: 'integer',
    format: 'int64',
    description,
    minimum: 0,
    maximum: Number.MAX_SAFE_INTEGER,
    ...(nullable ? { nullable: true } : {}),
  };
}

/** A string the parser requires non-empty (ObjectReader `{ nonEmpty: true }`). */
function nonEmptyString(description: string | undefined, nullable: boolean): SchemaObject {
  return {
    type: 'string',
    ...(description === undefined ? {} : { description }),
    minLength: 1,
    ...(nullable ? { nullable: true } : {}),
  };
}

/** A field that tsvmm's GET /vm/config always reports as null, since it refuses the feature. */
function alwaysNull(what: string): SchemaObject {
  return {
    description: `Always null: tsvmm does not support ${what} yet and refuses a configuration that sets it (features.ts). Kept so a Firecracker client finds the key it expects.`,
    nullable: true,
    enum: [null],
  };
}

// ---------------------------------------------------------------------------------------------
// Schemas (Firecracker's `definitions`, in its order where possible).

/** machine-config's properties; for PATCH every field is optional (Firecracker's MachineConfigUpdate). */
function machineConfigProperties(patch: boolean): Record<string, SchemaObject> {
  return {
    cpu_template: nullableRef('CpuTemplate'),
    smt: {
      type: 'boolean',
      description: 'Flag for enabling/disabling simultaneous multithreading. Can be enabled only on x86.',
      default: false,
      nullable: true,
    },
    mem_size_mib: {
      type: 'integer',
      // Firecracker: no bounds. tsvmm (machine-config.ts MEM_SIZE_MIB_RANGE): at least 128 MiB,
      // about what a distro kernel with an initramfs needs to reach /init, and at most 64 GiB.
      description: `Memory size of VM, in MiB (tsvmm: ${MEM_SIZE_MIB_RANGE.min} to ${MEM_SIZE_MIB_RANGE.max})`,
      minimum: MEM_SIZE_MIB_RANGE.min,
      maximum: MEM_SIZE_MIB_RANGE.max,
      ...(patch ? { nullable: true } : {}),
    },
    track_dirty_pages: {
      type: 'boolean',
      description:
        'Enable dirty page tracking. If this is enabled, then incremental guest memory snapshots can be created. These belong to diff snapshots, which contain, besides the microVM state, only the memory dirtied since a previous snapshot. Full snapshots each contain a full copy of the guest memory.',
      default: false,
      nullable: true,
    },
    vcpu_count: {
      type: 'integer',
      // Firecracker swagger: minimum 1, maximum 32 — the same as VCPU_COUNT_RANGE.
      minimum: VCPU_COUNT_RANGE.min,
      maximum: VCPU_COUNT_RANGE.max,
      description: 'Number of vCPUs (either 1 or an even number when smt is true)',
      ...(patch ? { nullable: true } : {}),
    },
    huge_pages: nullableEnum(
      HUGE_PAGES,
      'None',
      'Which huge pages configuration should be used to back guest memory. "None" uses regular 4K pages. "Transparent" enables THP via madvise(MADV_HUGEPAGE). "2M" uses explicit hugetlbfs 2MB pages (then mem_size_mib must be a multiple of 2).',
    ),
  };
}

const MACHINE_CONFIG_RENAMED = {
  ht_enabled: "Firecracker renamed it to 'smt'",
  cpu_count: "the field is 'vcpu_count'",
  memory_mib: "the field is 'mem_size_mib'",
};

const SCHEMAS: Record<string, SchemaObject> = {
  BootSource: {
    type: 'object',
    description: 'Boot source descriptor.',
    required: ['kernel_image_path'],
    additionalProperties: false,
    properties: {
      boot_args: {
        type: 'string',
        // Not in Firecracker's swagger; boot-source.ts: the x86 boot protocol's command line
        // holds 2048 bytes including the final NUL, and a NUL would end it early.
        description: `Kernel boot arguments (at most ${BOOT_ARGS_MAX_BYTES} bytes of UTF-8, no NUL character). Absent: the VMM's default command line.`,
        maxLength: BOOT_ARGS_MAX_BYTES,
        'x-tsvmm-max-utf8-bytes': BOOT_ARGS_MAX_BYTES,
        pattern: '^[^\\u0000]*$',
        'x-tsvmm-pattern-hint': 'free of NUL characters',
        nullable: true,
      },
      initrd_path: nonEmptyString('Host level path to the initrd image used to boot the guest', true),
      kernel_image_path: nonEmptyString('Host level path to the kernel image used to boot the guest', false),
    },
    'x-tsvmm-renamed-fields': {
      kernel_path: "the field is 'kernel_image_path'",
      kernel: "the field is 'kernel_image_path'",
      initrd: "the field is 'initrd_path'",
      cmdline: "the field is 'boot_args'",
    },
  },

  CpuTemplate: {
    type: 'string',
    description:
      'The CPU Template defines a set of flags to be disabled from the microvm so that the features exposed to the guest are the same as in the selected instance type. This parameter has been deprecated and it will be removed in future Firecracker release.',
    enum: [...CPU_TEMPLATES],
    default: 'None',
  },

  Drive: {
    type: 'object',
    description:
      "A virtio-block drive backed by path_on_host, or a vhost-user-block drive served on socket. Exactly one of path_on_host and socket must be set; with socket, path_on_host, is_read_only, io_engine and rate_limiter must be omitted (Firecracker: they 'should be omitted for vhost-user-block configuration'). At most one drive is the root device.",
    required: ['drive_id', 'is_root_device'],
    additionalProperties: false,
    properties: {
      drive_id: nonEmptyString(undefined, false),
      partuuid: nonEmptyString(
        'Represents the unique id of the boot partition of this device. It is optional and it will be taken into account only if the is_root_device field is true.',
        true,
      ),
      is_root_device: { type: 'boolean' },
      cache_type: nullableEnum(CACHE_TYPES, 'Unsafe', 'Represents the caching strategy for the block device.'),
      is_read_only: {
        type: 'boolean',
        description: 'Is block read only. This field should be omitted for vhost-user-block configuration.',
        default: false,
        nullable: true,
      },
      path_on_host: nonEmptyString(
        'Host level path for the guest drive. This field is required for virtio-block config and should be omitted for vhost-user-block configuration.',
        true,
      ),
      rate_limiter: nullableRef('RateLimiter'),
      io_engine: nullableEnum(
        IO_ENGINES,
        'Sync',
        'Type of the IO engine used by the device. "Async" is supported on host kernels newer than 5.10.51. This field should be omitted for vhost-user-block configuration.',
      ),
      socket: nonEmptyString(
        'Path to the socket of vhost-user-block backend. This field is required for vhost-user-block config should be omitted for virtio-block configuration.',
        true,
      ),
    },
    'x-tsvmm-renamed-fields': { path: "the field is 'path_on_host'", read_only: "the field is 'is_read_only'" },
  },

  Error: {
    type: 'object',
    // Firecracker leaves fault_message optional; tsvmm always sends one line saying what went wrong.
    required: ['fault_message'],
    additionalProperties: false,
    properties: {
      fault_message: {
        type: 'string',
        description: 'A description of the error condition (one line, naming the field at fault)',
        readOnly: true,
        minLength: 1,
        // The characters schema.ts singleLine() escapes, so a message never spans lines.
        pattern: '^[^\\u0000-\\u001f\\u007f\\u2028\\u2029]*$',
        'x-tsvmm-pattern-hint': 'a single line of text',
      },
    },
  },

  FullVmConfiguration: {
    type: 'object',
    description:
      "The whole configuration in the config-file format (vm-config.ts toFirecrackerJson). Firecracker's balloon, cpu-config, memory-hotplug, mmds-config and pmem are listed so Firecracker clients find them, but are always null (or empty) in tsvmm.",
    additionalProperties: false,
    properties: {
      balloon: alwaysNull('the balloon device'),
      drives: { type: 'array', description: 'Configurations for all block devices.', items: ref('Drive'), nullable: true },
      'boot-source': nullableRef('BootSource'),
      'cpu-config': alwaysNull('custom CPU templates'),
      logger: nullableRef('Logger'),
      'machine-config': nullableRef('MachineConfiguration'),
      metrics: nullableRef('Metrics'),
      'memory-hotplug': alwaysNull('memory hotplug'),
      'mmds-config': alwaysNull('the metadata service (MMDS)'),
      'network-interfaces': {
        type: 'array',
        description: 'Configurations for all net devices.',
        items: ref('NetworkInterface'),
        nullable: true,
      },
      pmem: {
        type: 'array',
        description: 'Always empty (or absent): tsvmm does not support pmem devices yet.',
        items: { type: 'object', additionalProperties: false, properties: {} },
        maxItems: 0,
        nullable: true,
      },
      vsock: nullableRef('Vsock'),
      entropy: nullableRef('EntropyDevice'),
    },
  },

  InstanceActionInfo: {
    type: 'object',
    description: 'Variant wrapper containing the real action.',
    required: ['action_type'],
    additionalProperties: false,
    properties: {
      action_type: {
        description: 'Enumeration indicating what type of action is contained in the payload',
        type: 'string',
        enum: ['FlushMetrics', 'InstanceStart', 'SendCtrlAltDel'],
      },
    },
  },

  InstanceInfo: {
    type: 'object',
    description: 'Describes MicroVM instance information.',
    required: ['app_name', 'id', 'state', 'vmm_version'],
    additionalProperties: false,
    properties: {
      app_name: { description: 'Application name.', type: 'string' },
      id: { description: 'MicroVM / instance ID.', type: 'string' },
      state: {
        description:
          'The current detailed state (Not started, Running, Paused) of the Firecracker instance. This value is read-only for the control-plane.',
        type: 'string',
        enum: ['Not started', 'Running', 'Paused'],
      },
      vmm_version: { description: 'MicroVM hypervisor build version.', type: 'string' },
    },
  },

  Logger: {
    type: 'object',
    description: 'Describes the configuration option for the logging capability.',
    additionalProperties: false,
    properties: {
      level: {
        type: 'string',
        // logger.ts: Firecracker parses the level case-insensitively and also takes "warn".
        description: 'Set the level. The possible values are case-insensitive ("warn" means "Warning").',
        enum: [...LOG_LEVELS, null],
        nullable: true,
        default: 'Info',
        'x-tsvmm-enum-case-insensitive': true,
        'x-tsvmm-enum-aliases': { warn: 'Warning' },
      },
      log_path: nonEmptyString('Path to the named pipe or file for the human readable log output (absent: standard error).', true),
      show_level: { type: 'boolean', description: 'Whether or not to output the level in the logs.', default: false, nullable: true },
      show_log_origin: {
        type: 'boolean',
        description: "Whether or not to include the file path and line number of the log's origin.",
        default: false,
        nullable: true,
      },
      module: { ...nonEmptyString('The module path to filter log messages by.', true), example: 'api_server::request' },
    },
    'x-tsvmm-renamed-fields': { log_fifo: "replaced by 'log_path'", options: 'no longer exists' },
  },

  MachineConfiguration: {
    type: 'object',
    description:
      'Describes the number of vCPUs, memory size, SMT capabilities, huge page configuration and the CPU template. With smt, vcpu_count must be 1 or even; with huge_pages "2M", mem_size_mib must be a multiple of 2.',
    required: ['mem_size_mib', 'vcpu_count'],
    additionalProperties: false,
    properties: machineConfigProperties(false),
    'x-tsvmm-renamed-fields': MACHINE_CONFIG_RENAMED,
  },

  // Not in Firecracker's swagger, which reuses MachineConfiguration (required fields and all) for
  // PATCH; Firecracker's MachineConfigUpdate, like parseMachineConfigPatch, makes every field
  // optional and refuses an update that sets none.
  MachineConfigurationPatch: {
    type: 'object',
    description:
      'A subset of Machine Configuration Parameters: at least one field, not null. The fields given replace the current ones and the result is checked as a whole.',
    additionalProperties: false,
    minProperties: 1,
    properties: machineConfigProperties(true),
    'x-tsvmm-renamed-fields': MACHINE_CONFIG_RENAMED,
  },

  Metrics: {
    type: 'object',
    description: 'Describes the configuration option for the metrics capability.',
    required: ['metrics_path'],
    additionalProperties: false,
    properties: {
      metrics_path: nonEmptyString('Path to the named pipe or file where the JSON-formatted metrics are flushed.', false),
    },
    'x-tsvmm-renamed-fields': { metrics_fifo: "replaced by 'metrics_path'" },
  },

  NetworkInterface: {
    type: 'object',
    description: 'Defines a network interface.',
    required: ['host_dev_name', 'iface_id'],
    additionalProperties: false,
    properties: {
      guest_mac: {
        type: 'string',
        // Firecracker: any string that parses as a MAC. network-interface.ts parseMacAddress also
        // refuses multicast and all-zero addresses, which Linux would not accept for a NIC.
        description: 'Unicast MAC address of the guest interface, xx:xx:xx:xx:xx:xx (absent: the guest picks one).',
        pattern: '^(?!00:00:00:00:00:00$)[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$',
        'x-tsvmm-pattern-hint': 'a unicast MAC address other than all zeros, like "06:00:ac:10:00:02"',
        nullable: true,
      },
      host_dev_name: {
        type: 'string',
        // Not in Firecracker's swagger; network-interface.ts: a Linux interface name is at most
        // IFNAMSIZ - 1 = 15 bytes, with no whitespace or '/', and not "." or "..".
        description: 'Host level path for the guest network interface (the TAP device name)',
        minLength: 1,
        maxLength: HOST_DEV_NAME_MAX_BYTES,
        'x-tsvmm-max-utf8-bytes': HOST_DEV_NAME_MAX_BYTES,
        pattern: '^(?!\\.\\.?$)[^\\s/]+$',
        'x-tsvmm-pattern-hint': "a Linux interface name (no whitespace or '/', not '.' or '..')",
      },
      iface_id: nonEmptyString(undefined, false),
      mtu: {
        type: 'integer',
        description:
          'MTU to advertise to the guest via VIRTIO_NET_F_MTU. When set, a compatible guest driver will configure the interface with this MTU. When absent, VIRTIO_NET_F_MTU is not advertised and the guest uses its default MTU.',
        // Firecracker swagger: minimum 68, maximum 65535 — the same as MTU_RANGE.
        minimum: MTU_RANGE.min,
        maximum: MTU_RANGE.max,
        nullable: true,
      },
      rx_rate_limiter: nullableRef('RateLimiter'),
      tx_rate_limiter: nullableRef('RateLimiter'),
    },
    'x-tsvmm-renamed-fields': {
      allow_mmds_requests: 'no longer exists; list the interface in mmds-config.network_interfaces instead',
      tap: "the field is 'host_dev_name'",
      mac: "the field is 'guest_mac'",
    },
  },

  PartialDrive: {
    type: 'object',
    description: 'A new backing file and/or rate limiter for a drive, after boot.',
    required: ['drive_id'],
    additionalProperties: false,
    properties: {
      drive_id: nonEmptyString(undefined, false),
      path_on_host: nonEmptyString('Host level path for the guest drive. This field is optional for virtio-block config and should be omitted for vhost-user-block configuration.', true),
      rate_limiter: nullableRef('RateLimiter'),
    },
  },

  PartialNetworkInterface: {
    type: 'object',
    description: 'Defines a partial network interface structure, used to update the rate limiters for that interface, after microvm start.',
    required: ['iface_id'],
    additionalProperties: false,
    properties: {
      iface_id: nonEmptyString(undefined, false),
      rx_rate_limiter: nullableRef('RateLimiter'),
      tx_rate_limiter: nullableRef('RateLimiter'),
    },
  },

  RateLimiter: {
    type: 'object',
    description:
      'Defines an IO rate limiter with independent bytes/s and ops/s limits. Limits are defined by configuring each of the _bandwidth_ and _ops_ token buckets. This field is optional for virtio-block config and should be omitted for vhost-user-block configuration.',
    additionalProperties: false,
    properties: {
      bandwidth: nullableRef('TokenBucket', 'Token bucket with bytes as tokens'),
      ops: nullableRef('TokenBucket', 'Token bucket with operations as tokens'),
    },
  },

  TokenBucket: {
    type: 'object',
    description:
      'Defines a token bucket with a maximum capacity (size), an initial burst size (one_time_burst) and an interval for refilling purposes (refill_time). The refill-rate is derived from size and refill_time, and it is the constant rate at which the tokens replenish. The refill process only starts happening after the initial burst budget is consumed. Consumption from the token bucket is unbounded in speed which allows for bursts bound in size by the amount of tokens available. Once the token bucket is empty, consumption speed is bound by the refill_rate. A bucket with size 0 or refill_time 0 limits nothing.',
    required: ['refill_time', 'size'],
    additionalProperties: false,
    properties: {
      one_time_burst: u64('The initial size of a token bucket.', true),
      refill_time: u64('The amount of milliseconds it takes for the bucket to refill.', false),
      size: u64('The total number of tokens this bucket can hold.', false),
    },
  },

  Vm: {
    type: 'object',
    description: 'Defines the microVM running state. It is especially useful in the snapshotting context.',
    required: ['state'],
    additionalProperties: false,
    properties: { state: { type: 'string', enum: ['Paused', 'Resumed'] } },
  },

  EntropyDevice: {
    type: 'object',
    description: 'Defines an entropy device.',
    additionalProperties: false,
    properties: { rate_limiter: nullableRef('RateLimiter') },
  },

  FirecrackerVersion: {
    type: 'object',
    description: 'Describes the Firecracker version.',
    required: ['firecracker_version'],
    additionalProperties: false,
    properties: { firecracker_version: { description: 'Firecracker build version.', type: 'string' } },
  },

  Vsock: {
    type: 'object',
    description:
      'Defines a vsock device, backed by a set of Unix Domain Sockets, on the host side. For host-initiated connections, the VMM will be listening on the Unix socket identified by the path `uds_path`. It will create this socket, bind and listen on it. Host-initiated connections will be performed by connection to this socket and issuing a connection forwarding request to the desired guest-side vsock port (i.e. `CONNECT 52\\n`, to connect to port 52). For guest-initiated connections, the VMM will expect host software to be bound and listening on Unix sockets at `uds_path_<PORT>`. E.g. "/path/to/host_vsock.sock_52" for port number 52.',
    required: ['guest_cid', 'uds_path'],
    additionalProperties: false,
    properties: {
      guest_cid: {
        type: 'integer',
        // Firecracker swagger: minimum 3, no maximum (a u32). vsock.ts also refuses 0xFFFFFFFF,
        // which is VMADDR_CID_ANY and cannot name a guest.
        minimum: GUEST_CID_RANGE.min,
        maximum: GUEST_CID_RANGE.max,
        description: 'Guest Vsock CID',
      },
      uds_path: {
        type: 'string',
        // Not in Firecracker's swagger; vsock.ts: sockaddr_un.sun_path holds 108 bytes with the NUL.
        description: 'Path to UNIX domain socket, used to proxy vsock connections.',
        minLength: 1,
        maxLength: UDS_PATH_MAX_BYTES,
        'x-tsvmm-max-utf8-bytes': UDS_PATH_MAX_BYTES,
      },
      vsock_id: {
        type: 'string',
        description: 'This parameter has been deprecated and it will be removed in future Firecracker release. tsvmm ignores it.',
        nullable: true,
      },
    },
    'x-tsvmm-renamed-fields': { cid: "the field is 'guest_cid'" },
  },
};

// ---------------------------------------------------------------------------------------------
// Paths: the subset of Firecracker's that tsvmm serves, with Firecracker's operationIds.

const PATHS: Record<string, PathItemObject> = {
  '/': {
    get: getOperation('describeInstance', 'Returns general information about an instance.', undefined, 'InstanceInfo', 'The instance information'),
  },
  '/actions': {
    put: updateOperation({
      operationId: 'createSyncAction',
      summary: 'Creates a synchronous action.',
      bodyDescription: 'The action to perform',
      schema: 'InstanceActionInfo',
      done: 'The update was successful',
      badInput: 'The action cannot be executed due to bad input',
    }),
  },
  '/boot-source': {
    put: updateOperation({
      operationId: 'putGuestBootSource',
      summary: 'Creates or updates the boot source. Pre-boot only.',
      description: 'Creates new boot source if one does not already exist, otherwise updates it. Will fail if update is not possible.',
      bodyDescription: 'Guest boot source properties',
      schema: 'BootSource',
      done: 'Boot source created/updated',
      badInput: 'Boot source cannot be created due to bad input',
    }),
  },
  '/drives/{drive_id}': {
    put: updateOperation({
      operationId: 'putGuestDriveByID',
      summary: 'Creates or updates a drive. Pre-boot only.',
      description:
        'Creates new drive with ID specified by drive_id path parameter. If a drive with the specified ID already exists, updates its state based on new input. Will fail if update is not possible.',
      parameter: idParameter('drive_id', 'The id of the guest drive'),
      bodyDescription: 'Guest drive properties',
      schema: 'Drive',
      done: 'Drive created/updated',
      badInput: 'Drive cannot be created/updated due to bad input',
    }),
    patch: updateOperation({
      operationId: 'patchGuestDriveByID',
      summary: 'Updates the properties of a drive. Post-boot only.',
      description:
        'Updates the properties of the drive with the ID specified by drive_id path parameter. Will fail if update is not possible.',
      parameter: idParameter('drive_id', 'The id of the guest drive'),
      bodyDescription: 'Guest drive properties',
      schema: 'PartialDrive',
      done: 'Drive updated',
      badInput: 'Drive cannot be updated due to bad input',
    }),
  },
  '/entropy': {
    put: updateOperation({
      operationId: 'putEntropyDevice',
      summary: 'Creates an entropy device. Pre-boot only.',
      description: 'Enables an entropy device that provides high-quality random data to the guest.',
      bodyDescription: 'Guest entropy device properties',
      schema: 'EntropyDevice',
      done: 'Entropy device created',
      // Firecracker declares only 204 and default here; tsvmm answers bad input with 400 like elsewhere.
      badInput: 'Entropy device cannot be created due to bad input',
    }),
  },
  '/logger': {
    put: updateOperation({
      operationId: 'putLogger',
      summary: 'Initializes the logger by specifying a named pipe or a file for the logs output.',
      bodyDescription: 'Logging system description',
      schema: 'Logger',
      done: 'Logger created.',
      badInput: 'Logger cannot be initialized due to bad input.',
    }),
  },
  '/machine-config': {
    get: getOperation(
      'getMachineConfiguration',
      'Gets the machine configuration of the VM.',
      'Gets the machine configuration of the VM. When called before the PUT operation, it will return the default values for the vCPU count (=1), memory size (=128 MiB). By default SMT is disabled and there is no CPU Template.',
      'MachineConfiguration',
      'OK',
    ),
    put: updateOperation({
      operationId: 'putMachineConfiguration',
      summary: 'Updates the Machine Configuration of the VM. Pre-boot only.',
      description:
        'Updates the Virtual Machine Configuration with the specified input. The VMM starts with default values for vCPU count (=1) and memory size (=128 MiB). The vCPU count is restricted to the [1, 32] range. With SMT enabled, the vCPU count is required to be either 1 or an even number in the range. If 2M hugetlbfs pages are specified, then `mem_size_mib` must be a multiple of 2. If any of the parameters has an incorrect value, the whole update fails. All parameters that are optional and are not specified are set to their default values (smt = false, track_dirty_pages = false, cpu_template = None, huge_pages = None).',
      bodyDescription: 'Machine Configuration Parameters',
      schema: 'MachineConfiguration',
      done: 'Machine Configuration created/updated',
      badInput: 'Machine Configuration cannot be updated due to bad input',
    }),
    patch: updateOperation({
      operationId: 'patchMachineConfiguration',
      summary: 'Partially updates the Machine Configuration of the VM. Pre-boot only.',
      description: 'Partially updates the Virtual Machine Configuration with the specified input. If any of the parameters has an incorrect value, the whole update fails.',
      bodyDescription: 'A subset of Machine Configuration Parameters',
      schema: 'MachineConfigurationPatch',
      done: 'Machine Configuration created/updated',
      badInput: 'Machine Configuration cannot be updated due to bad input',
    }),
  },
  '/metrics': {
    put: updateOperation({
      operationId: 'putMetrics',
      summary: 'Initializes the metrics system by specifying a named pipe or a file for the metrics output.',
      bodyDescription: 'Metrics system description',
      schema: 'Metrics',
      done: 'Metrics system created.',
      badInput: 'Metrics system cannot be initialized due to bad input request or metrics system already initialized.',
    }),
  },
  '/network-interfaces/{iface_id}': {
    put: updateOperation({
      operationId: 'putGuestNetworkInterfaceByID',
      summary: 'Creates a network interface. Pre-boot only.',
      description: 'Creates new network interface with ID specified by iface_id path parameter.',
      parameter: idParameter('iface_id', 'The id of the guest network interface'),
      bodyDescription: 'Guest network interface properties',
      schema: 'NetworkInterface',
      done: 'Network interface created/updated',
      badInput: 'Network interface cannot be created due to bad input',
    }),
    patch: updateOperation({
      operationId: 'patchGuestNetworkInterfaceByID',
      summary: 'Updates the rate limiters applied to a network interface. Post-boot only.',
      description: 'Updates the rate limiters applied to a network interface.',
      parameter: idParameter('iface_id', 'The id of the guest network interface'),
      bodyDescription: 'A subset of the guest network interface properties',
      schema: 'PartialNetworkInterface',
      done: 'Network interface updated',
      badInput: 'Network interface cannot be updated due to bad input',
    }),
  },
  '/version': {
    get: getOperation('getFirecrackerVersion', 'Gets the Firecracker version.', undefined, 'FirecrackerVersion', 'OK'),
  },
  '/vm': {
    patch: updateOperation({
      operationId: 'patchVm',
      summary: 'Updates the microVM state.',
      description: 'Sets the desired state (Paused or Resumed) for the microVM.',
      bodyDescription: 'The microVM state',
      schema: 'Vm',
      done: 'Vm state updated',
      badInput: 'Vm state cannot be updated due to bad input',
    }),
  },
  '/vm/config': {
    get: getOperation(
      'getExportVmConfig',
      'Gets the full VM configuration.',
      'Gets configuration for all VM resources.',
      'FullVmConfiguration',
      'OK',
    ),
  },
  '/vsock': {
    put: updateOperation({
      operationId: 'putGuestVsock',
      summary: 'Creates/updates a vsock device. Pre-boot only.',
      description:
        'The first call creates the device with the configuration specified in body. Subsequent calls will update the device configuration. May fail if update is not possible.',
      bodyDescription: 'Guest vsock properties',
      schema: 'Vsock',
      done: 'Vsock created/updated',
      badInput: 'Vsock cannot be created due to bad input',
    }),
  },
};

/** tsvmm's API as OpenAPI 3.0.3. Plain data: `JSON.stringify(OPENAPI_DOCUMENT)` is the document. */
export const OPENAPI_DOCUMENT: OpenApiDocument = {
  openapi: '3.0.3',
  info: {
    title: 'tsvmm API',
    description:
      "Firecracker's RESTful API as served by tsvmm: HTTP/1.1 with JSON bodies on the Unix domain socket given by --api-sock. Modelled on Firecracker's swagger (src/firecracker/swagger/firecracker.yaml); only the endpoints listed here are served.",
    // The version of this document (tsvmm's package version); the Firecracker API it follows is
    // x-firecracker-swagger-version.
    version: '0.1.0',
    license: { name: 'Apache 2.0', url: 'http://www.apache.org/licenses/LICENSE-2.0.html' },
    'x-firecracker-swagger-version': FIRECRACKER_SWAGGER_VERSION,
  },
  // Firecracker's swagger: host "localhost", basePath "/", scheme http (over the Unix socket).
  servers: [{ url: 'http://localhost/', description: 'The Unix domain socket given by --api-sock' }],
  paths: PATHS,
  components: { schemas: SCHEMAS },
};
