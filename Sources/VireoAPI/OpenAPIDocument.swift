/// The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`.
///
/// Hand-written, and kept honest by `OpenAPITests`: every route the server has is documented here
/// and every response the tests see matches its schema (no undocumented or missing properties).
public enum OpenAPIDocument {
    public static let json = #"""
{
  "openapi": "3.1.0",
  "info": {
    "title": "Vireo API",
    "version": "0.1.0",
    "description": "Manage virtual machines across hypervisors. Every error is the envelope `{\"error\": {\"code\", \"message\", \"requestId\"}}`. When the controller listens beyond loopback, every request needs `Authorization: Bearer TOKEN` (the admin token; agents use the join token)."
  },
  "servers": [
    {
      "url": "http://127.0.0.1:7480"
    }
  ],
  "components": {
    "securitySchemes": {
      "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Required only when the controller listens beyond loopback."
      }
    },
    "parameters": {
      "vm": {
        "name": "vm",
        "in": "path",
        "required": true,
        "description": "VM name or ID.",
        "schema": {
          "type": "string"
        }
      },
      "host": {
        "name": "host",
        "in": "path",
        "required": true,
        "description": "Host name or ID.",
        "schema": {
          "type": "string"
        }
      },
      "migration": {
        "name": "migration",
        "in": "path",
        "required": true,
        "description": "Migration ID.",
        "schema": {
          "type": "string"
        }
      },
      "app": {
        "name": "app",
        "in": "path",
        "required": true,
        "description": "Application name.",
        "schema": {
          "type": "string"
        }
      },
      "limit": {
        "name": "limit",
        "in": "query",
        "required": false,
        "description": "At most this many items.",
        "schema": {
          "type": "integer",
          "minimum": 1,
          "maximum": 1000,
          "default": 100
        }
      }
    },
    "responses": {
      "Error": {
        "description": "The error envelope.",
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/ErrorEnvelope"
            }
          }
        }
      }
    },
    "schemas": {
      "ErrorEnvelope": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "error"
        ],
        "properties": {
          "error": {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "code",
              "message",
              "requestId"
            ],
            "properties": {
              "code": {
                "type": "string",
                "enum": [
                  "invalid_argument",
                  "not_found",
                  "conflict",
                  "unauthorized",
                  "failed_precondition",
                  "unsupported",
                  "unavailable",
                  "payload_too_large",
                  "internal",
                  "unknown"
                ]
              },
              "message": {
                "type": "string",
                "description": "Names the field and the value when the input was wrong."
              },
              "requestId": {
                "type": "string"
              }
            }
          }
        }
      },
      "Health": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "status",
          "version"
        ],
        "properties": {
          "status": {
            "type": "string",
            "enum": [
              "ok"
            ]
          },
          "version": {
            "type": "string"
          }
        }
      },
      "VMState": {
        "type": "string",
        "enum": [
          "pending",
          "scheduled",
          "starting",
          "running",
          "stopping",
          "stopped",
          "failed",
          "deleting"
        ]
      },
      "PowerIntent": {
        "type": "string",
        "enum": [
          "running",
          "stopped",
          "deleted"
        ]
      },
      "HostState": {
        "type": "string",
        "enum": [
          "ready",
          "unreachable"
        ]
      },
      "Capability": {
        "type": "string",
        "enum": [
          "live-migration",
          "snapshots",
          "pause",
          "serial-console",
          "virtual-time"
        ]
      },
      "Size": {
        "description": "A size: a string such as \"256MiB\" or \"1GiB\", or a number of bytes.",
        "oneOf": [
          {
            "type": "string"
          },
          {
            "type": "integer",
            "minimum": 0
          }
        ]
      },
      "VMCreate": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "image"
        ],
        "properties": {
          "name": {
            "type": "string",
            "description": "DNS-label-like: lower-case letters, digits and '-', at most 63 characters."
          },
          "image": {
            "type": "string",
            "description": "An image of the catalogue, e.g. tiny."
          },
          "cpus": {
            "type": "integer",
            "minimum": 1,
            "maximum": 512,
            "default": 1
          },
          "memory": {
            "$ref": "#/components/schemas/Size"
          },
          "host": {
            "type": "string",
            "description": "Pin the VM to this host."
          },
          "app": {
            "type": "string",
            "description": "The application the VM belongs to."
          }
        }
      },
      "VM": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "name",
          "image",
          "cpus",
          "memoryMiB",
          "state",
          "intent",
          "generation",
          "createdAt",
          "updatedAt",
          "stateChangedAt"
        ],
        "properties": {
          "id": {
            "type": "string",
            "format": "uuid"
          },
          "name": {
            "type": "string"
          },
          "image": {
            "type": "string"
          },
          "cpus": {
            "type": "integer"
          },
          "memoryMiB": {
            "type": "integer"
          },
          "state": {
            "$ref": "#/components/schemas/VMState"
          },
          "intent": {
            "$ref": "#/components/schemas/PowerIntent"
          },
          "host": {
            "type": "string",
            "description": "The host the VM is placed on, absent while pending."
          },
          "pinnedHost": {
            "type": "string"
          },
          "app": {
            "type": "string"
          },
          "message": {
            "type": "string",
            "description": "Why the VM is in its state (failure reason, why it is pending)."
          },
          "generation": {
            "type": "integer",
            "description": "Increases with every change of the desired state."
          },
          "address": {
            "type": "string",
            "description": "Where the guest's services are reachable, as its host reports it: `127.0.0.1:PORT` (the guest's port 80, forwarded on its host) or the guest's IP. Present only while the VM is `running`; absent when it is pending, starting, stopping, stopped, failed or being deleted, and replaced when it runs on another host."
          },
          "placement": {
            "$ref": "#/components/schemas/PlacementExplanation"
          },
          "createdAt": {
            "type": "string",
            "format": "date-time"
          },
          "updatedAt": {
            "type": "string",
            "format": "date-time"
          },
          "stateChangedAt": {
            "type": "string",
            "format": "date-time"
          },
          "lastBootMs": {
            "type": "integer",
            "minimum": 0,
            "description": "How long its last start took on its host, from launching the hypervisor process to the guest being ready, in milliseconds (drivers that measure it)."
          }
        }
      },
      "VMPage": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/VM"
            },
            "description": "Ordered by name; summaries without `placement`."
          },
          "next": {
            "type": "string",
            "description": "Pass as `after` to get the next page; absent on the last page."
          }
        }
      },
      "PlacementExplanation": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "decidedAt",
          "verdicts",
          "omitted"
        ],
        "properties": {
          "chosenHost": {
            "type": "string",
            "description": "Absent when no host fits."
          },
          "decidedAt": {
            "type": "string",
            "format": "date-time"
          },
          "verdicts": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/HostVerdict"
            }
          },
          "omitted": {
            "type": "object",
            "additionalProperties": {
              "type": "integer"
            },
            "description": "Hosts left out of `verdicts`, counted by reason kind (capacity, host-state, capability, pinned, scored)."
          }
        }
      },
      "HostVerdict": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "hostID",
          "hostName"
        ],
        "properties": {
          "hostID": {
            "type": "string",
            "format": "uuid"
          },
          "hostName": {
            "type": "string"
          },
          "filtered": {
            "$ref": "#/components/schemas/FilterReason"
          },
          "score": {
            "$ref": "#/components/schemas/HostScore"
          }
        }
      },
      "HostScore": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "cpuFreeAfter",
          "memoryFreeAfter",
          "total"
        ],
        "properties": {
          "cpuFreeAfter": {
            "type": "number",
            "minimum": 0,
            "maximum": 1
          },
          "memoryFreeAfter": {
            "type": "number",
            "minimum": 0,
            "maximum": 1
          },
          "total": {
            "type": "number",
            "minimum": 0,
            "maximum": 1
          }
        }
      },
      "FilterReason": {
        "description": "Why a host was filtered: an object with exactly one key naming the reason.",
        "oneOf": [
          {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "hostNotReady"
            ],
            "properties": {
              "hostNotReady": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "state"
                ],
                "properties": {
                  "state": {
                    "$ref": "#/components/schemas/HostState"
                  }
                }
              }
            }
          },
          {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "notPinnedHost"
            ],
            "properties": {
              "notPinnedHost": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "pinned"
                ],
                "properties": {
                  "pinned": {
                    "type": "string"
                  }
                }
              }
            }
          },
          {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "missingCapability"
            ],
            "properties": {
              "missingCapability": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "_0"
                ],
                "properties": {
                  "_0": {
                    "$ref": "#/components/schemas/Capability"
                  }
                }
              }
            }
          },
          {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "insufficientCPU"
            ],
            "properties": {
              "insufficientCPU": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "requested",
                  "free"
                ],
                "properties": {
                  "requested": {
                    "type": "integer"
                  },
                  "free": {
                    "type": "integer"
                  }
                }
              }
            }
          },
          {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "insufficientMemory"
            ],
            "properties": {
              "insufficientMemory": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "requestedMiB",
                  "freeMiB"
                ],
                "properties": {
                  "requestedMiB": {
                    "type": "integer"
                  },
                  "freeMiB": {
                    "type": "integer"
                  }
                }
              }
            }
          }
        ]
      },
      "Host": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "name",
          "state",
          "driver",
          "cpus",
          "memoryMiB",
          "allocatedCPUs",
          "allocatedMemoryMiB",
          "vms",
          "capabilities",
          "attributes",
          "registeredAt",
          "lastHeartbeatAt",
          "stateChangedAt"
        ],
        "properties": {
          "id": {
            "type": "string",
            "format": "uuid"
          },
          "name": {
            "type": "string"
          },
          "state": {
            "$ref": "#/components/schemas/HostState"
          },
          "driver": {
            "type": "string"
          },
          "cpus": {
            "type": "integer"
          },
          "memoryMiB": {
            "type": "integer"
          },
          "allocatedCPUs": {
            "type": "integer"
          },
          "allocatedMemoryMiB": {
            "type": "integer"
          },
          "vms": {
            "type": "integer"
          },
          "capabilities": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Capability"
            }
          },
          "attributes": {
            "type": "object",
            "additionalProperties": {
              "type": "string"
            }
          },
          "address": {
            "type": "string"
          },
          "registeredAt": {
            "type": "string",
            "format": "date-time"
          },
          "lastHeartbeatAt": {
            "type": "string",
            "format": "date-time"
          },
          "stateChangedAt": {
            "type": "string",
            "format": "date-time"
          },
          "cpuLoad": {
            "type": "number",
            "minimum": 0,
            "description": "Recent CPU use as a fraction of what the host may use (its agent's measure — its cgroup or the machine — else the sum of its VMs'); absent until measured."
          }
        }
      },
      "HostList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Host"
            }
          }
        }
      },
      "ApplyResult": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "kind",
                "name",
                "action"
              ],
              "properties": {
                "kind": {
                  "type": "string",
                  "enum": [
                    "VirtualMachine",
                    "Application",
                    "SLO"
                  ]
                },
                "name": {
                  "type": "string"
                },
                "action": {
                  "type": "string",
                  "enum": [
                    "created",
                    "updated",
                    "unchanged"
                  ]
                },
                "changes": {
                  "type": "array",
                  "items": {
                    "type": "string"
                  },
                  "description": "What changed, one line each."
                }
              }
            }
          }
        }
      },
      "ClusterEvent": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "seq",
          "time",
          "kind",
          "name"
        ],
        "properties": {
          "seq": {
            "type": "integer",
            "description": "Increases by one per event; the SSE `id`."
          },
          "time": {
            "type": "string",
            "format": "date-time"
          },
          "kind": {
            "type": "string",
            "enum": [
              "vm.created",
              "vm.state",
              "vm.placed",
              "vm.deleted",
              "host.registered",
              "host.state",
              "migration",
              "app",
              "slo",
              "plan"
            ]
          },
          "name": {
            "type": "string",
            "description": "The VM's, host's or application's name; for `slo` events `app/objective`."
          },
          "from": {
            "type": "string"
          },
          "to": {
            "type": "string"
          },
          "message": {
            "type": "string"
          }
        }
      },
      "HostFingerprint": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "cpus",
          "memoryMiB",
          "driver",
          "capabilities",
          "attributes"
        ],
        "properties": {
          "cpus": {
            "type": "integer",
            "minimum": 1
          },
          "memoryMiB": {
            "type": "integer",
            "minimum": 1
          },
          "driver": {
            "type": "string"
          },
          "capabilities": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Capability"
            }
          },
          "attributes": {
            "type": "object",
            "additionalProperties": {
              "type": "string"
            }
          }
        }
      },
      "AgentRegistration": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "fingerprint"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "fingerprint": {
            "$ref": "#/components/schemas/HostFingerprint"
          },
          "address": {
            "type": "string"
          }
        }
      },
      "AgentRegistrationResponse": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "hostID",
          "heartbeatIntervalMs"
        ],
        "properties": {
          "hostID": {
            "type": "string",
            "format": "uuid"
          },
          "heartbeatIntervalMs": {
            "type": "integer"
          }
        }
      },
      "AgentHeartbeat": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "hostID",
          "instances"
        ],
        "properties": {
          "hostID": {
            "type": "string",
            "format": "uuid"
          },
          "instances": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "id",
                "state",
                "generation"
              ],
              "properties": {
                "id": {
                  "type": "string",
                  "format": "uuid"
                },
                "state": {
                  "type": "string",
                  "enum": [
                    "stopped",
                    "starting",
                    "running",
                    "stopping",
                    "failed"
                  ]
                },
                "generation": {
                  "type": "integer"
                },
                "message": {
                  "type": "string"
                },
                "address": {
                  "type": "string",
                  "description": "Where the guest's services are reachable from its host."
                },
                "bootMs": {
                  "type": "integer",
                  "minimum": 0
                },
                "cpuSeconds": {
                  "type": "number",
                  "minimum": 0,
                  "description": "CPU time the VM's hypervisor process has used, seconds."
                }
              }
            }
          },
          "console": {
            "type": "array",
            "description": "Console output new since the `consoleOffset` of each VM in the previous answer.",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "id",
                "chunk"
              ],
              "properties": {
                "id": {
                  "type": "string",
                  "format": "uuid"
                },
                "chunk": {
                  "type": "object",
                  "additionalProperties": false,
                  "required": [
                    "offset",
                    "next",
                    "text"
                  ],
                  "properties": {
                    "offset": {
                      "type": "integer",
                      "minimum": 0,
                      "description": "Byte offset in the host's console log where `text` starts; 0 below the last `consoleOffset` means the log started over."
                    },
                    "next": {
                      "type": "integer",
                      "minimum": 0,
                      "description": "Byte offset just past `text`."
                    },
                    "text": {
                      "type": "string"
                    }
                  }
                }
              }
            }
          },
          "migrations": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/MigrationReport"
            },
            "description": "Absent when there are none."
          },
          "hostCPU": {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "busySeconds",
              "capacity"
            ],
            "properties": {
              "busySeconds": {
                "type": "number",
                "minimum": 0,
                "description": "Busy CPU time of the host (its cgroup, or the machine) since a fixed origin, seconds."
              },
              "capacity": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "CPUs the host may use (quota or cpuset), possibly fractional."
              }
            },
            "description": "The host's own CPU, when its driver measures it."
          }
        }
      },
      "DesiredHostState": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "vms"
        ],
        "properties": {
          "vms": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "id",
                "name",
                "image",
                "cpus",
                "memoryMiB",
                "intent",
                "generation"
              ],
              "properties": {
                "id": {
                  "type": "string",
                  "format": "uuid"
                },
                "name": {
                  "type": "string"
                },
                "image": {
                  "type": "string"
                },
                "cpus": {
                  "type": "integer"
                },
                "memoryMiB": {
                  "type": "integer"
                },
                "intent": {
                  "$ref": "#/components/schemas/PowerIntent"
                },
                "generation": {
                  "type": "integer"
                },
                "consoleOffset": {
                  "type": "integer",
                  "minimum": 0,
                  "description": "Offset in the VM's console log up to which the controller has its output; send what follows. Absent: 0."
                },
                "app": {
                  "type": "string"
                },
                "telemetry": {
                  "$ref": "#/components/schemas/TelemetrySpec"
                }
              }
            }
          },
          "migrations": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/MigrationOrder"
            },
            "description": "Absent when there are none."
          }
        }
      },
      "MigrationState": {
        "type": "string",
        "enum": [
          "pending",
          "ready",
          "running",
          "completed",
          "failed"
        ],
        "description": "pending: the destination prepares; ready: it listens; running: the source sends; completed: the VM runs on the destination; failed: it runs on the source, as before."
      },
      "MigrationProgress": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "transferredBytes",
          "remainingBytes",
          "totalBytes",
          "dirtyPagesPerSecond"
        ],
        "properties": {
          "transferredBytes": {
            "type": "integer",
            "minimum": 0,
            "description": "Guest memory sent so far, in bytes (pages dirtied again are sent again)."
          },
          "remainingBytes": {
            "type": "integer",
            "minimum": 0
          },
          "totalBytes": {
            "type": "integer",
            "minimum": 0,
            "description": "Guest memory size in bytes."
          },
          "dirtyPagesPerSecond": {
            "type": "integer",
            "minimum": 0
          }
        }
      },
      "MigrationStats": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "totalTimeMs",
          "downtimeMs",
          "transferredBytes"
        ],
        "properties": {
          "totalTimeMs": {
            "type": "integer",
            "minimum": 0,
            "description": "From the start of the transfer to the guest running on the destination."
          },
          "downtimeMs": {
            "type": "integer",
            "minimum": 0,
            "description": "How long the guest was paused: the final switch-over (mode live), or from the pause to the last byte sent (mode paused)."
          },
          "transferredBytes": {
            "type": "integer",
            "minimum": 0
          },
          "setupTimeMs": {
            "type": "integer",
            "minimum": 0
          },
          "mode": {
            "type": "string",
            "enum": [
              "live",
              "paused"
            ],
            "description": "live: memory copied while the guest ran, downtime is the final switch-over; paused: the guest was paused for the whole copy (under TCG, see docs/migration.md)."
          }
        }
      },
      "Migration": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "vm",
          "vmID",
          "source",
          "destination",
          "state",
          "reason",
          "requestedAt"
        ],
        "properties": {
          "id": {
            "type": "string",
            "format": "uuid"
          },
          "vm": {
            "type": "string",
            "description": "VM name."
          },
          "vmID": {
            "type": "string",
            "format": "uuid"
          },
          "source": {
            "type": "string",
            "description": "Host the VM moves from."
          },
          "destination": {
            "type": "string",
            "description": "Host the VM moves to."
          },
          "state": {
            "$ref": "#/components/schemas/MigrationState"
          },
          "reason": {
            "type": "string",
            "description": "Why: `requested` (by a user) or the planner's explanation."
          },
          "message": {
            "type": "string",
            "description": "Why it failed, or how it ended."
          },
          "progress": {
            "$ref": "#/components/schemas/MigrationProgress"
          },
          "stats": {
            "$ref": "#/components/schemas/MigrationStats"
          },
          "requestedAt": {
            "type": "string",
            "format": "date-time"
          },
          "startedAt": {
            "type": "string",
            "format": "date-time"
          },
          "endedAt": {
            "type": "string",
            "format": "date-time"
          }
        },
        "description": "A live migration of one VM."
      },
      "MigrationList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Migration"
            }
          }
        },
        "description": "Newest first."
      },
      "MigrateRequest": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "to"
        ],
        "properties": {
          "to": {
            "type": "string",
            "description": "Destination host name or ID."
          }
        }
      },
      "MigrationReport": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "state"
        ],
        "properties": {
          "id": {
            "type": "string",
            "format": "uuid"
          },
          "state": {
            "$ref": "#/components/schemas/MigrationState"
          },
          "incomingURI": {
            "type": "string",
            "description": "Destination: where it listens, e.g. tcp:198.18.2.1:40123."
          },
          "progress": {
            "$ref": "#/components/schemas/MigrationProgress"
          },
          "stats": {
            "$ref": "#/components/schemas/MigrationStats"
          },
          "message": {
            "type": "string"
          },
          "settled": {
            "type": "boolean",
            "description": "Destination: it has taken the VM over, or discarded its copy."
          }
        },
        "description": "What a host reports about a migration it takes part in."
      },
      "MigrationOrder": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "role",
          "state",
          "vm"
        ],
        "properties": {
          "id": {
            "type": "string",
            "format": "uuid"
          },
          "role": {
            "type": "string",
            "enum": [
              "source",
              "destination"
            ]
          },
          "state": {
            "$ref": "#/components/schemas/MigrationState"
          },
          "vm": {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "id",
              "name",
              "image",
              "cpus",
              "memoryMiB",
              "intent",
              "generation"
            ],
            "properties": {
              "id": {
                "type": "string",
                "format": "uuid"
              },
              "name": {
                "type": "string"
              },
              "image": {
                "type": "string"
              },
              "cpus": {
                "type": "integer"
              },
              "memoryMiB": {
                "type": "integer"
              },
              "intent": {
                "$ref": "#/components/schemas/PowerIntent"
              },
              "generation": {
                "type": "integer"
              },
              "consoleOffset": {
                "type": "integer",
                "minimum": 0,
                "description": "Offset in the VM's console log up to which the controller has its output; send what follows. Absent: 0."
              },
              "app": {
                "type": "string"
              },
              "telemetry": {
                "$ref": "#/components/schemas/TelemetrySpec"
              }
            }
          },
          "guestAddress": {
            "type": "string",
            "description": "The guest's address, which it keeps on the destination."
          },
          "incomingURI": {
            "type": "string"
          }
        },
        "description": "A migration the host takes part in, as the controller sees it now."
      },
      "SLOState": {
        "type": "string",
        "enum": [
          "unknown",
          "ok",
          "warning",
          "breaching"
        ]
      },
      "ObjectiveKind": {
        "type": "string",
        "enum": [
          "response-time",
          "throughput",
          "capacity",
          "ratio"
        ]
      },
      "MetricType": {
        "type": "string",
        "enum": [
          "counter",
          "gauge",
          "histogram",
          "summary",
          "untyped"
        ]
      },
      "ScrapeTarget": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "port",
          "path",
          "intervalSeconds",
          "timeoutSeconds"
        ],
        "properties": {
          "port": {
            "type": "integer"
          },
          "path": {
            "type": "string"
          },
          "intervalSeconds": {
            "type": "number"
          },
          "timeoutSeconds": {
            "type": "number"
          }
        }
      },
      "ProbeTarget": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "port",
          "path",
          "intervalSeconds",
          "timeoutSeconds"
        ],
        "properties": {
          "port": {
            "type": "integer"
          },
          "path": {
            "type": "string"
          },
          "intervalSeconds": {
            "type": "number"
          },
          "timeoutSeconds": {
            "type": "number"
          }
        }
      },
      "TelemetrySpec": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "metrics"
        ],
        "properties": {
          "scrape": {
            "$ref": "#/components/schemas/ScrapeTarget"
          },
          "probe": {
            "$ref": "#/components/schemas/ProbeTarget"
          },
          "metrics": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "type"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "type": {
                  "$ref": "#/components/schemas/MetricType"
                }
              }
            }
          }
        }
      },
      "BurnRateAlert": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "longSeconds",
          "shortSeconds",
          "factor"
        ],
        "properties": {
          "longSeconds": {
            "type": "number"
          },
          "shortSeconds": {
            "type": "number"
          },
          "factor": {
            "type": "number"
          }
        }
      },
      "Objective": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "kind",
          "metric",
          "target",
          "windowSeconds",
          "goal",
          "periodSeconds",
          "burnRateAlerts"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "kind": {
            "$ref": "#/components/schemas/ObjectiveKind"
          },
          "metric": {
            "type": "string",
            "description": "Metric selector."
          },
          "totalMetric": {
            "type": "string"
          },
          "quantile": {
            "type": "number"
          },
          "target": {
            "type": "number"
          },
          "windowSeconds": {
            "type": "number"
          },
          "goal": {
            "type": "number"
          },
          "periodSeconds": {
            "type": "number"
          },
          "burnRateAlerts": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/BurnRateAlert"
            }
          }
        }
      },
      "VMSpec": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "image",
          "cpus",
          "memoryMiB"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "image": {
            "type": "string"
          },
          "cpus": {
            "type": "integer"
          },
          "memoryMiB": {
            "type": "integer"
          },
          "host": {
            "type": "string"
          },
          "app": {
            "type": "string"
          }
        }
      },
      "ApplicationSpec": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "vms",
          "telemetry",
          "objectives"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "vms": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/VMSpec"
            }
          },
          "telemetry": {
            "$ref": "#/components/schemas/TelemetrySpec"
          },
          "objectives": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Objective"
            }
          }
        }
      },
      "ObjectiveStatus": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "kind",
          "state",
          "target",
          "goodWindows",
          "badWindows",
          "emptyWindows",
          "errorBudgetRemaining",
          "burnRates"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "kind": {
            "$ref": "#/components/schemas/ObjectiveKind"
          },
          "state": {
            "$ref": "#/components/schemas/SLOState"
          },
          "stateChangedAt": {
            "type": "string",
            "format": "date-time"
          },
          "sli": {
            "type": "number",
            "description": "The indicator over the last judged window; absent when it had no data."
          },
          "target": {
            "type": "number"
          },
          "goodWindows": {
            "type": "integer"
          },
          "badWindows": {
            "type": "integer"
          },
          "emptyWindows": {
            "type": "integer"
          },
          "errorBudgetRemaining": {
            "type": "number",
            "description": "1: all of the period's budget left; 0: none; below 0: overspent."
          },
          "burnRates": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "lookbackSeconds",
                "rate"
              ],
              "properties": {
                "lookbackSeconds": {
                  "type": "number"
                },
                "rate": {
                  "type": "number"
                }
              }
            }
          },
          "lastWindowEnd": {
            "type": "string",
            "format": "date-time"
          }
        }
      },
      "App": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "spec",
          "vms",
          "objectives",
          "state",
          "generation",
          "createdAt",
          "updatedAt"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "spec": {
            "$ref": "#/components/schemas/ApplicationSpec"
          },
          "vms": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "state"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "state": {
                  "$ref": "#/components/schemas/VMState"
                },
                "host": {
                  "type": "string"
                },
                "address": {
                  "type": "string"
                }
              }
            }
          },
          "objectives": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/ObjectiveStatus"
            }
          },
          "state": {
            "$ref": "#/components/schemas/SLOState"
          },
          "lastSampleAt": {
            "type": "string",
            "format": "date-time"
          },
          "lastError": {
            "type": "string"
          },
          "current": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "labels",
                "value",
                "time"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "labels": {
                  "type": "object",
                  "additionalProperties": {
                    "type": "string"
                  }
                },
                "value": {
                  "type": "number"
                },
                "time": {
                  "type": "string",
                  "format": "date-time"
                }
              }
            }
          },
          "generation": {
            "type": "integer"
          },
          "createdAt": {
            "type": "string",
            "format": "date-time"
          },
          "updatedAt": {
            "type": "string",
            "format": "date-time"
          }
        }
      },
      "AppList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/App"
            }
          }
        }
      },
      "AppDeletion": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "name",
          "deletedVMs",
          "keptVMs"
        ],
        "properties": {
          "name": {
            "type": "string"
          },
          "deletedVMs": {
            "type": "array",
            "items": {
              "type": "string"
            }
          },
          "keptVMs": {
            "type": "array",
            "items": {
              "type": "string"
            }
          }
        }
      },
      "IngestResult": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "accepted"
        ],
        "properties": {
          "accepted": {
            "type": "integer"
          }
        }
      },
      "Series": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "app",
          "metric",
          "from",
          "to",
          "series"
        ],
        "properties": {
          "app": {
            "type": "string"
          },
          "metric": {
            "type": "string"
          },
          "from": {
            "type": "string",
            "format": "date-time"
          },
          "to": {
            "type": "string",
            "format": "date-time"
          },
          "series": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "name",
                "labels",
                "resolution",
                "points"
              ],
              "properties": {
                "name": {
                  "type": "string"
                },
                "labels": {
                  "type": "object",
                  "additionalProperties": {
                    "type": "string"
                  }
                },
                "resolution": {
                  "type": "string",
                  "description": "raw, the rollup step (1m), or mixed."
                },
                "points": {
                  "type": "array",
                  "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [
                      "t",
                      "v"
                    ],
                    "properties": {
                      "t": {
                        "type": "string",
                        "format": "date-time"
                      },
                      "v": {
                        "type": "number"
                      },
                      "min": {
                        "type": "number"
                      },
                      "max": {
                        "type": "number"
                      },
                      "mean": {
                        "type": "number"
                      }
                    }
                  }
                }
              }
            }
          }
        }
      },
      "AgentSamples": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "hostID",
          "items"
        ],
        "properties": {
          "hostID": {
            "type": "string",
            "format": "uuid"
          },
          "items": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "app",
                "vm",
                "time",
                "exposition"
              ],
              "properties": {
                "app": {
                  "type": "string"
                },
                "vm": {
                  "type": "string"
                },
                "time": {
                  "type": "string",
                  "format": "date-time"
                },
                "exposition": {
                  "type": "string",
                  "description": "Prometheus text."
                },
                "error": {
                  "type": "string"
                }
              }
            }
          }
        }
      },
      "PlanState": {
        "type": "string",
        "enum": [
          "dry-run",
          "executing",
          "completed",
          "failed"
        ]
      },
      "PlanAction": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "vm",
          "vmID",
          "from",
          "to",
          "reason",
          "explanation",
          "predicted",
          "outcome"
        ],
        "properties": {
          "vm": {
            "type": "string"
          },
          "vmID": {
            "type": "string",
            "format": "uuid"
          },
          "from": {
            "type": "string",
            "description": "Host it leaves."
          },
          "to": {
            "type": "string",
            "description": "Host it goes to."
          },
          "reason": {
            "type": "string",
            "enum": [
              "objective-pressure",
              "host-over-threshold"
            ]
          },
          "application": {
            "type": "string"
          },
          "objective": {
            "type": "string"
          },
          "explanation": {
            "type": "string",
            "description": "Why, in a sentence: the objective and its burn rate, the host's CPU, what the move relieves, its cost."
          },
          "predicted": {
            "type": "object",
            "additionalProperties": false,
            "required": [
              "sourceLoadBefore",
              "sourceLoadAfter",
              "destinationLoadBefore",
              "destinationLoadAfter",
              "migrationSeconds",
              "downtimeMs",
              "transferredMiB"
            ],
            "properties": {
              "sourceLoadBefore": {
                "type": "number"
              },
              "sourceLoadAfter": {
                "type": "number"
              },
              "destinationLoadBefore": {
                "type": "number"
              },
              "destinationLoadAfter": {
                "type": "number"
              },
              "migrationSeconds": {
                "type": "number"
              },
              "downtimeMs": {
                "type": "integer"
              },
              "transferredMiB": {
                "type": "number"
              },
              "benefit": {
                "type": "number",
                "description": "Burn rate × relief (`slo` policy)."
              },
              "weightedCost": {
                "type": "number",
                "description": "The cost it was compared with (`slo` policy)."
              }
            },
            "description": "Loads are CPU demand over cores."
          },
          "migration": {
            "type": "string",
            "format": "uuid",
            "description": "The migration started for it."
          },
          "outcome": {
            "type": "string",
            "description": "`planned`, `skipped`, or its migration's state."
          },
          "outcomeMessage": {
            "type": "string"
          },
          "downtimeMs": {
            "type": "integer",
            "minimum": 0
          },
          "endedAt": {
            "type": "string",
            "format": "date-time"
          }
        },
        "description": "One live migration of a plan."
      },
      "PlanConsidered": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "vm",
          "host",
          "moved",
          "destinations"
        ],
        "properties": {
          "vm": {
            "type": "string"
          },
          "host": {
            "type": "string"
          },
          "moved": {
            "type": "boolean"
          },
          "reason": {
            "type": "string",
            "description": "Why it is not moved."
          },
          "destinations": {
            "type": "array",
            "items": {
              "type": "object",
              "additionalProperties": false,
              "required": [
                "host"
              ],
              "properties": {
                "host": {
                  "type": "string"
                },
                "filtered": {
                  "type": "string",
                  "description": "Why this host cannot take it."
                },
                "loadAfter": {
                  "type": "number"
                }
              }
            }
          },
          "omitted": {
            "type": "object",
            "additionalProperties": {
              "type": "integer"
            },
            "description": "Destinations not listed one by one, counted by kind (large clusters)."
          }
        },
        "description": "A VM the policy looked at."
      },
      "Plan": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "id",
          "policy",
          "trigger",
          "state",
          "createdAt",
          "actions",
          "considered",
          "notes"
        ],
        "properties": {
          "id": {
            "type": "string",
            "description": "`dry-run` for a plan that was not executed."
          },
          "policy": {
            "type": "string"
          },
          "trigger": {
            "type": "string",
            "enum": [
              "manual",
              "automatic"
            ]
          },
          "state": {
            "$ref": "#/components/schemas/PlanState"
          },
          "createdAt": {
            "type": "string",
            "format": "date-time"
          },
          "endedAt": {
            "type": "string",
            "format": "date-time"
          },
          "message": {
            "type": "string"
          },
          "actions": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/PlanAction"
            }
          },
          "considered": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/PlanConsidered"
            }
          },
          "notes": {
            "type": "array",
            "items": {
              "type": "string"
            }
          }
        },
        "description": "A rebalancing plan: the moves in order with reasons, predictions and outcomes, and everything the policy weighed."
      },
      "PlanList": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "items"
        ],
        "properties": {
          "items": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/Plan"
            }
          }
        },
        "description": "Executed plans, newest first."
      },
      "PlanRequest": {
        "type": "object",
        "additionalProperties": false,
        "required": [],
        "properties": {
          "policy": {
            "type": "string",
            "description": "`slo`, `threshold` or `threshold-<fraction>`; default: the cluster's, else `slo`."
          },
          "execute": {
            "type": "boolean",
            "default": false,
            "description": "Start the moves and store the plan; otherwise a dry run."
          }
        }
      },
      "RebalanceSettings": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "intervalSeconds"
        ],
        "properties": {
          "policy": {
            "type": "string",
            "description": "Absent: the controller does not rebalance on its own."
          },
          "intervalSeconds": {
            "type": "number",
            "minimum": 0.5,
            "maximum": 86400
          }
        }
      },
      "RebalanceStatus": {
        "type": "object",
        "additionalProperties": false,
        "required": [
          "settings",
          "policies"
        ],
        "properties": {
          "settings": {
            "$ref": "#/components/schemas/RebalanceSettings"
          },
          "policies": {
            "type": "array",
            "items": {
              "type": "string"
            }
          },
          "lastPlan": {
            "$ref": "#/components/schemas/Plan"
          }
        },
        "description": "How the cluster rebalances itself and what its last automatic plan found."
      }
    }
  },
  "security": [
    {},
    {
      "bearer": []
    }
  ],
  "paths": {
    "/healthz": {
      "get": {
        "summary": "Liveness and version.",
        "responses": {
          "200": {
            "description": "Healthy.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Health"
                }
              }
            }
          }
        },
        "security": []
      }
    },
    "/metrics": {
      "get": {
        "summary": "Prometheus metrics: vireo_http_requests_total, vireo_http_request_duration_seconds, vireo_vms{state}, vireo_hosts{state}.",
        "responses": {
          "200": {
            "description": "Prometheus text exposition 0.0.4.",
            "content": {
              "text/plain": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/openapi.json": {
      "get": {
        "summary": "This document.",
        "responses": {
          "200": {
            "description": "OpenAPI 3.1.",
            "content": {
              "application/json": {
                "schema": {
                  "type": "object"
                }
              }
            }
          }
        },
        "security": []
      }
    },
    "/v1/hosts": {
      "get": {
        "summary": "List hosts, by name, with what is allocated on each.",
        "responses": {
          "200": {
            "description": "All hosts.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HostList"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/hosts/{host}": {
      "parameters": [
        {
          "$ref": "#/components/parameters/host"
        }
      ],
      "get": {
        "summary": "One host.",
        "responses": {
          "200": {
            "description": "The host.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Host"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms": {
      "get": {
        "summary": "List VMs by name, a page at a time.",
        "parameters": [
          {
            "$ref": "#/components/parameters/limit"
          },
          {
            "name": "after",
            "in": "query",
            "description": "Cursor: the `next` of the previous page.",
            "schema": {
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "description": "One page.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VMPage"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      },
      "post": {
        "summary": "Create a VM; it is placed at once (or stays pending until a host fits) and started.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/VMCreate"
              }
            }
          }
        },
        "responses": {
          "201": {
            "description": "Created, with the placement explanation.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VM"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          },
          "413": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms/{vm}": {
      "parameters": [
        {
          "$ref": "#/components/parameters/vm"
        }
      ],
      "get": {
        "summary": "One VM, with its placement explanation.",
        "responses": {
          "200": {
            "description": "The VM.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VM"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      },
      "delete": {
        "summary": "Delete a VM: its host stops and removes it, then the record goes.",
        "responses": {
          "202": {
            "description": "Deletion under way.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VM"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms/{vm}/start": {
      "parameters": [
        {
          "$ref": "#/components/parameters/vm"
        }
      ],
      "post": {
        "summary": "Ask for the VM to run.",
        "responses": {
          "202": {
            "description": "Accepted; follow `state`.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VM"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          },
          "412": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms/{vm}/stop": {
      "parameters": [
        {
          "$ref": "#/components/parameters/vm"
        }
      ],
      "post": {
        "summary": "Ask for the VM to stop.",
        "responses": {
          "202": {
            "description": "Accepted; follow `state`.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/VM"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          },
          "412": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms/{vm}/migrate": {
      "parameters": [
        {
          "$ref": "#/components/parameters/vm"
        }
      ],
      "post": {
        "summary": "Live-migrate the running VM to another host.",
        "description": "Both hosts need the live-migration capability. The VM keeps running; follow the migration at /v1/migrations/{migration}. While it is under way, the VM cannot be stopped, deleted or migrated again (409). A pinned VM is pinned to the destination afterwards.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/MigrateRequest"
              }
            }
          }
        },
        "responses": {
          "202": {
            "description": "Accepted; the migration starts.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Migration"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          },
          "412": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/vms/{vm}/logs": {
      "parameters": [
        {
          "$ref": "#/components/parameters/vm"
        }
      ],
      "get": {
        "summary": "The VM's serial console output. The controller keeps the last 256 KiB per VM (in its database); agents send new output with each heartbeat, about once a second. Deleting the VM deletes its output.",
        "parameters": [
          {
            "name": "tail",
            "in": "query",
            "description": "Only the last N lines.",
            "schema": {
              "type": "integer",
              "minimum": 0,
              "maximum": 1000000
            }
          },
          {
            "name": "after",
            "in": "query",
            "description": "Only the output after this position (a `Vireo-Log-Position` seen before); everything kept when that position is no longer kept.",
            "schema": {
              "type": "integer",
              "minimum": 0
            }
          }
        ],
        "responses": {
          "200": {
            "description": "The output as UTF-8 text; empty when the VM has printed nothing yet.",
            "headers": {
              "Vireo-Log-Position": {
                "description": "Bytes of output received for this VM so far: the position just past the returned text. Pass it as `after` to get only new output.",
                "schema": {
                  "type": "integer",
                  "minimum": 0
                }
              }
            },
            "content": {
              "text/plain": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/apply": {
      "post": {
        "summary": "Apply a manifest (YAML or JSON, one or more documents): all documents or none.",
        "requestBody": {
          "required": true,
          "content": {
            "application/yaml": {
              "schema": {
                "type": "string"
              }
            },
            "application/json": {
              "schema": {
                "type": "object"
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "What happened to each document.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/ApplyResult"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/events": {
      "get": {
        "summary": "Server-sent events of state changes (`id` is the event's seq, `event` its kind, `data` a ClusterEvent).",
        "parameters": [
          {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Resume after this seq.",
            "schema": {
              "type": "integer",
              "minimum": 0
            }
          },
          {
            "name": "after",
            "in": "query",
            "description": "Resume after this seq (when the header is absent).",
            "schema": {
              "type": "integer",
              "minimum": 0
            }
          },
          {
            "name": "follow",
            "in": "query",
            "description": "false: send the remembered events and end.",
            "schema": {
              "type": "boolean",
              "default": true
            }
          }
        ],
        "responses": {
          "200": {
            "description": "An event stream; each `data` line is a ClusterEvent.",
            "content": {
              "text/event-stream": {
                "schema": {
                  "type": "string"
                },
                "x-data-schema": {
                  "$ref": "#/components/schemas/ClusterEvent"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/agent/register": {
      "post": {
        "summary": "An agent registers its host (join token beyond loopback). Re-registering keeps the host's ID.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/AgentRegistration"
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "Registered.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/AgentRegistrationResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/agent/heartbeat": {
      "post": {
        "summary": "An agent reports every VM it runs and gets the complete desired state of its host.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/AgentHeartbeat"
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "The desired state.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/DesiredHostState"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/migrations": {
      "get": {
        "summary": "List migrations, newest first.",
        "parameters": [
          {
            "name": "vm",
            "in": "query",
            "required": false,
            "description": "Only this VM's (name or ID).",
            "schema": {
              "type": "string"
            }
          },
          {
            "$ref": "#/components/parameters/limit"
          }
        ],
        "responses": {
          "200": {
            "description": "The migrations.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/MigrationList"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/migrations/{migration}": {
      "parameters": [
        {
          "$ref": "#/components/parameters/migration"
        }
      ],
      "get": {
        "summary": "One migration, with its progress or figures.",
        "responses": {
          "200": {
            "description": "The migration.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Migration"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/apps": {
      "get": {
        "summary": "Applications with the state of their objectives.",
        "responses": {
          "200": {
            "description": "Applications by name.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/AppList"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/apps/{app}": {
      "parameters": [
        {
          "$ref": "#/components/parameters/app"
        }
      ],
      "get": {
        "summary": "One application: VMs, each objective's SLI, error budget and burn rates, and current values.",
        "responses": {
          "200": {
            "description": "The application.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/App"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      },
      "delete": {
        "summary": "Delete an application; `vms` says what happens to its VMs.",
        "parameters": [
          {
            "name": "vms",
            "in": "query",
            "required": true,
            "schema": {
              "type": "string",
              "enum": [
                "keep",
                "delete"
              ]
            },
            "description": "keep: they run on without an application; delete: they are deleted too."
          }
        ],
        "responses": {
          "200": {
            "description": "What was done.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/AppDeletion"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          },
          "409": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/apps/{app}/samples": {
      "parameters": [
        {
          "$ref": "#/components/parameters/app"
        }
      ],
      "post": {
        "summary": "Push samples for an application that reports itself (Prometheus text; exposition timestamps are kept, otherwise the time of receipt). Only declared metrics are kept.",
        "requestBody": {
          "required": true,
          "content": {
            "text/plain": {
              "schema": {
                "type": "string"
              }
            }
          }
        },
        "responses": {
          "202": {
            "description": "How many samples were taken in.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/IngestResult"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/apps/{app}/series": {
      "parameters": [
        {
          "$ref": "#/components/parameters/app"
        }
      ],
      "get": {
        "summary": "Stored points of a metric for charts: raw samples within the raw retention, per-minute rollups before.",
        "parameters": [
          {
            "name": "metric",
            "in": "query",
            "required": true,
            "schema": {
              "type": "string"
            },
            "description": "Metric selector, e.g. `x_total{code=\"200\"}`."
          },
          {
            "name": "from",
            "in": "query",
            "required": false,
            "schema": {
              "type": "string"
            },
            "description": "RFC 3339, seconds since the epoch, or -DURATION. Default: an hour before `to`."
          },
          {
            "name": "to",
            "in": "query",
            "required": false,
            "schema": {
              "type": "string"
            },
            "description": "As `from`. Default: now."
          }
        ],
        "responses": {
          "200": {
            "description": "The matching series.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Series"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/agent/samples": {
      "post": {
        "summary": "An agent delivers what it scraped, probed and measured on its host.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/AgentSamples"
              }
            }
          }
        },
        "responses": {
          "202": {
            "description": "How many samples were taken in.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/IngestResult"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/plans": {
      "get": {
        "summary": "Executed rebalancing plans with their outcomes, newest first.",
        "parameters": [
          {
            "$ref": "#/components/parameters/limit"
          }
        ],
        "responses": {
          "200": {
            "description": "The plans.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/PlanList"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      },
      "post": {
        "summary": "Plan with a policy: a dry run, or with `execute` the moves start (within the migration budgets) and the plan is stored. If a move cannot start the rest are not started and the plan fails.",
        "requestBody": {
          "required": false,
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/PlanRequest"
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "The dry run.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Plan"
                }
              }
            }
          },
          "201": {
            "description": "The executed plan.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Plan"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/plans/{plan}": {
      "parameters": [
        {
          "name": "plan",
          "in": "path",
          "required": true,
          "schema": {
            "type": "string"
          }
        }
      ],
      "get": {
        "summary": "One executed plan.",
        "responses": {
          "200": {
            "description": "The plan.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Plan"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          },
          "404": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    },
    "/v1/rebalance": {
      "get": {
        "summary": "How the cluster rebalances itself, and its last automatic plan.",
        "responses": {
          "200": {
            "description": "The settings.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/RebalanceStatus"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      },
      "put": {
        "summary": "Set the cluster's rebalancing policy (`off` to stop) and interval; stored, and kept across restarts.",
        "requestBody": {
          "required": true,
          "content": {
            "application/json": {
              "schema": {
                "type": "object",
                "additionalProperties": false,
                "required": [
                  "policy"
                ],
                "properties": {
                  "policy": {
                    "type": "string",
                    "description": "`slo`, `threshold`, `threshold-<fraction>` or `off`."
                  },
                  "intervalSeconds": {
                    "type": "number",
                    "minimum": 0.5,
                    "maximum": 86400
                  }
                }
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "The new settings.",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/RebalanceStatus"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/Error"
          },
          "401": {
            "$ref": "#/components/responses/Error"
          }
        }
      }
    }
  }
}
"""#
}
