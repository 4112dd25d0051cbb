// RBAC auth function for the public listener (port 3111). The engine calls it once per new
// browser connection with {headers, query_params, ip_address}. Every connection gets a fresh
// session id, which is also its function-registration prefix, so each tab's
// `ui::on-todo-change` is its own function. Browsers may register functions and `stream`
// triggers, but no trigger types; which functions they may call is set by the listener's
// `expose_functions` in the engine config.

import { randomUUID } from "node:crypto";

export const AUTH_FUNCTION_ID = "todo-project::auth-function";

export function authFunction(log = console.log) {
  return {
    id: AUTH_FUNCTION_ID,
    description: "Creates a session for each connection to the public (RBAC) port",
    handler: async (input) => {
      const session_id = randomUUID();
      log(`auth: new session ${session_id} from ${input?.ip_address ?? "unknown address"}`);
      return {
        allowed_functions: [],
        forbidden_functions: [],
        allow_trigger_type_registration: false,
        allow_function_registration: true,
        allowed_trigger_types: ["stream"],
        context: { session_id },
        function_registration_prefix: session_id,
      };
    },
  };
}
