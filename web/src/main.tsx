import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { AuthClient } from "./auth";
import "./styles.css";

const auth = new AuthClient();
void auth.start();

const root = document.getElementById("root");
if (root === null) throw new Error("index.html has no #root");
createRoot(root).render(
  <StrictMode>
    <App auth={auth} />
  </StrictMode>,
);
