"""Hydra plugins that make `+recipe=NAME` find recipes in ./recipes of the cwd first, then the project's recipes/.

The `recipes/` directories hold the files directly (recipes/imx95_seg.yaml), while Hydra looks for the config group
`recipe/imx95_seg.yaml`; RecipeConfigSource maps the group onto such a directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "recipe"
SCHEME = "edgebuild-recipes"
PROJECT_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_dirs() -> list[Path]:
    """Lookup order: the user's ./recipes, then the project's own."""
    cwd = Path.cwd() / "recipes"
    return [cwd] if cwd.resolve() == PROJECT_RECIPES.resolve() else [cwd, PROJECT_RECIPES]


class RecipeConfigSource(ConfigSource):
    def __init__(self, provider: str, path: str) -> None:
        if "://" not in path:
            path = f"{self.scheme()}://{path}"
        super().__init__(provider=provider, path=path)

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _local(self, config_path: str) -> Optional[str]:
        """'recipe/x.yaml' -> '<dir>/x.yaml'; None for anything outside the recipe group."""
        parts = config_path.strip("/").split("/")
        if parts[0] != GROUP:
            return None
        return os.path.join(self.path, *parts[1:])

    def load_config(self, config_path: str) -> ConfigResult:
        local = self._local(self._normalize_file_name(config_path))
        if local is None or not os.path.isfile(local):
            raise ConfigLoadError(f"Config not found : {config_path}")
        with open(local, encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            cfg = OmegaConf.load(f)
        return ConfigResult(config=cfg, path=f"{self.scheme()}://{self.path}", provider=self.provider, header=header)

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        if config_path.strip("/") == "":
            return self.available()
        local = self._local(config_path)
        return local is not None and os.path.isdir(local)

    def is_config(self, config_path: str) -> bool:
        local = self._local(self._normalize_file_name(config_path))
        return local is not None and os.path.isfile(local)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        files: List[str] = []
        local = self._local(config_path) if config_path.strip("/") else None
        if config_path.strip("/") == "":
            if self.available() and results_filter in (None, ObjectType.GROUP):
                files.append(GROUP)
            return files
        if local is None or not os.path.isdir(local):
            return files
        for name in os.listdir(local):
            self._list_add_result(files=files, file_path=os.path.join(config_path, name), file_name=name,
                                  results_filter=results_filter)
        return sorted(set(files))


class RecipeSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for d in recipe_dirs():
            search_path.append(provider="edgebuild-recipes", path=f"{SCHEME}://{d}")
