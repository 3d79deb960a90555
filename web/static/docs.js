// Swagger UI for /openapi.json, all assets local.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", validatorUrl: null });
