"""Run by the system python3 (QGIS 3.22), not the venv (tests/test_ogc_qgis.py): load wangge's
grids over OAPIF and as MVT, with a Basic authentication configuration, and count the features.
Prints JSON."""
import json
import os
import sys

from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRectangle,
    QgsVectorLayer,
    QgsVectorTileLayer,
    QgsVectorTileRenderer,
)
from qgis.PyQt.QtCore import QSize

root, user, password, x0, y0, x1, y1 = sys.argv[1:8]
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
am = QgsApplication.authManager()
am.setMasterPassword("master-password", True)
cfg = QgsAuthMethodConfig()
cfg.setName("wangge")
cfg.setMethod("Basic")
cfg.setConfig("username", user)
cfg.setConfig("password", password)
ok, cfg = am.storeAuthenticationConfig(cfg)
authid = cfg.id()
out = {"authcfg": bool(ok)}
lyr = QgsVectorLayer(f"url='{root}' typename='grids' authcfg={authid} pagingEnabled='true' "
                     "pageSize='10'", "grids", "OAPIF")
out["oapif_valid"] = lyr.isValid()
out["oapif_codes"] = sorted(str(f["code"]) for f in lyr.getFeatures()) if lyr.isValid() else []


class Counter(QgsVectorTileRenderer):
    """A renderer that draws nothing and counts the features of each tile it is given."""

    seen = {}

    def type(self):
        return "counter"

    def clone(self):
        return self

    def startRender(self, context, tile_zoom, tile_range):
        pass

    def stopRender(self, context):
        pass

    def usedAttributes(self, context):
        return {}

    def requiredLayers(self, context, tile_zoom):
        return {"grids"}

    def renderTile(self, tile, context):
        t = tile.id()
        try:
            feats = tile.layerFeatures()
        except TypeError:
            feats = {name: tile.layerFeatures(name) for name in tile.layers()}
        Counter.seen[f"{t.zoomLevel()}/{t.column()}/{t.row()}"] = {
            k: len(v) for k, v in feats.items()}

    def writeXml(self, elem, context):
        pass

    def readXml(self, elem, context):
        pass


url = f"{root}/collections/grids/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}"
vt = QgsVectorTileLayer(f"type=xyz&url={url}&zmin=0&zmax=16&authcfg={authid}", "grids-mvt")
out["mvt_valid"] = vt.isValid()
counter = Counter()
vt.setRenderer(counter)
ms = QgsMapSettings()
ms.setLayers([vt])
ms.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
ms.setExtent(QgsRectangle(float(x0), float(y0), float(x1), float(y1)))
ms.setOutputSize(QSize(512, 512))
job = QgsMapRendererSequentialJob(ms)
job.start()
job.waitForFinished()
out["mvt_tiles"] = Counter.seen
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS's teardown with a Python renderer alive can crash; the answer is printed
