"""The message catalogue: every Chinese text the console shows, in one place.

Pages get it as JSON (``catalogue()``) and look texts up by key; templates use ``t(key)``.
Names kept in the database (categories, departments, station kinds, areas) come from there.
"""

from __future__ import annotations

from typing import Any

from geo import incidents as inc

ROLES = {
    "resident": "居民", "grid_worker": "网格员", "department_staff": "部门人员",
    "planner": "规划分析员", "commander": "指挥长", "admin": "管理员",
}
SLA = {"green": "正常", "amber": "临期", "red": "超期", "none": "已结束"}
ACTIONS = {
    "check_in": "报到", "consult": "会商", "carry_out": "落实", "feed_back": "反馈",
    "rate": "评价", "close": "办结", "reopen": "重新办理", "reroute": "改派", "urge": "督办",
    "escalate": "升级", "report": "吹哨上报", "duplicate": "重复合并",
}
TEAM_ROLES = {
    "grid_leader": "网格长", "responsible_cadre": "责任干部", "community_police": "社区民警",
    "urban_management": "城管队员", "market_supervisor": "市场监管员",
    "judicial_mediator": "司法调解员", "community_medic": "社区医生", "grid_worker": "网格员",
    "volunteer": "志愿者",
}
LEVELS = {"district": "区", "street": "街道", "community": "社区", "grid": "网格",
          "department": "部门"}
RUN_KINDS = {"circles": "服务圈", "coverage": "覆盖分析", "siting": "选址建议"}
SITING_METHODS = {"mclp": "最大覆盖模型", "greedy": "贪心算法"}
OPERATIONS = {"split": "拆分", "merge": "合并", "reshape": "调整边界", "reassign": "调整楼栋归属",
              "import": "导入图层", "undo": "撤销", "create": "新建",
              "retire": "撤销网格"}
CHANGES = {"added": "新增", "removed": "删除", "changed": "边界变更", "changed_before": "变更前",
           "moved": "楼栋迁移"}
RUN_STATUS = {"queued": "排队中", "running": "运行中", "finished": "已完成", "failed": "失败",
              "done": "已完成"}

TEXT = {
    "app": "网格化社会治理控制台",
    "sign_in": "登录", "sign_out": "退出登录", "username": "用户名", "password": "密码",
    "sign_in_failed": "用户名或密码错误",
    "register": "居民注册", "register_done": "注册成功，请登录",
    "account": "账户", "change_password": "修改密码", "old_password": "当前密码",
    "new_password": "新密码", "password_changed": "密码已修改",
    "views": "视图", "forbidden": "无权访问此页面", "back": "返回",
    "commander": "指挥调度", "worker": "网格员工作台", "department": "部门办件",
    "resident": "居民随手拍", "analyst": "服务圈分析",
    "map": "地图", "counts": "统计", "trend": "近30天趋势", "reported": "上报",
    "closed": "办结", "open": "在办", "overdue": "超期", "amber": "临期", "green": "正常",
    "district": "区县", "street": "街道", "community": "社区", "grid": "网格",
    "department_col": "部门",
    "name": "名称", "team": "2+5+N 网格队伍", "team_gaps": "缺口", "team_complete": "队伍齐全",
    "missing": "缺", "cases": "案件", "case": "案件详情", "history": "办理过程",
    "photos": "照片", "no_cases": "暂无案件", "category": "问题类别",
    "description": "问题描述", "photo": "现场照片", "location": "位置",
    "use_gps": "使用手机定位", "pick_on_map": "或在地图上点选位置",
    "located_in": "所属", "send": "提交上报", "sent": "已上报，案件编号",
    "my_reports": "我的上报", "rate": "评价办理结果", "rating": "满意度（1-5）",
    "rate_send": "提交评价", "rated": "已评价", "steps": "办理步骤",
    "note": "办理说明", "next_step": "下一步", "due_today": "今日到期",
    "checkin_due": "报到时限", "resolve_due": "办结时限", "reported_at": "上报时间",
    "status": "状态", "sla": "时限状态", "urge": "督办", "escalate": "超时升级",
    "urged": "已督办", "escalated": "已升级案件数", "refresh": "自动刷新",
    "updated": "更新于", "grid_zoom": "全区视图放大后显示网格",
    "grid_pick": "点击地图上的网格查看队伍和案件",
    "runs": "分析任务", "start_circles": "计算服务圈", "start_coverage": "覆盖分析",
    "start_siting": "选址建议", "run_started": "任务已提交", "kind": "站点类型",
    "tier": "步行距离", "uncovered": "未覆盖建筑", "sites": "建议选址",
    "gain": "新增覆盖居民", "shares": "各类站点覆盖率", "target": "目标",
    "export": "导出", "residents": "居民", "households": "户", "metres": "米",
    "people": "人", "percent": "%", "building": "建筑", "k_sites": "选址数量",
    "no_run": "尚无分析结果", "progress": "进度", "all": "全部", "loading": "加载中…",
    "error": "出错了", "csrf": "安全令牌缺失，请重新登录", "outside": "位置不在任何网格内",
    "required": "必填", "choose": "请选择", "id": "编号", "actor": "办理人",
    "time": "时间", "action": "操作", "grid_worker_steps": "可办理的步骤",
    "home": "首页", "run_kind": "任务类型", "docs": "接口文档", "escalation_level": "处置层级",
    "urge_count": "督办次数", "deadline": "时限", "cst": "北京时间",
    "planner_history": "边界历史", "generations": "边界版本", "effective": "生效时间",
    "author": "操作人", "summary": "摘要", "scheduled": "待生效", "in_force": "现行",
    "past": "历史", "from_gen": "对比起点", "to_gen": "对比终点", "compare": "比较",
    "diff": "版本差异", "change": "变化", "code": "编码", "from_grid": "原网格",
    "to_grid": "新网格", "by": "方式", "by_location": "随边界", "by_assignment": "指定归属",
    "undo": "撤销", "cancel_change": "取消计划", "from_short": "起点", "to_short": "终点",
    "confirm": "确定", "dismiss": "返回",
    "confirm_undo": "撤销第 {id} 版（{op}）？将生成一个新版本，恢复此前的网格边界和编码，"
                    "楼栋归属一并恢复。",
    "confirm_cancel": "取消第 {id} 版（{op}，计划于 {date} 生效）？此计划将被删除，"
                      "网格保持现状。取消操作会记入审计日志。",
    "undone": "已撤销，新版本", "cancelled": "已取消计划版本", "edit_grids": "编辑网格",
    "created_n": "新增", "retired_n": "注销", "changed_n": "变更", "moved_n": "楼栋",
    "data_load": "数据导入", "no_diff": "两个版本之间没有变化", "read_only": "只读",
    "pick_two": "选择两个版本后点击“比较”", "restores": "恢复网格", "retires": "注销编码",
    "checks": "规则检查", "checks_pass": "通过",
}
# The planner's map editor (规划编辑).
PLANNER = {
    "planner": "网格规划编辑",
    "mode_split": "拆分网格", "mode_reshape": "调整边界", "mode_merge": "合并网格",
    "mode_reassign": "调整楼栋", "mode_draft": "平衡草案",
    "hint_split": "先点击要拆分的网格，再在地图上依次点击画出穿过网格的分割线，然后点“预览”。",
    "hint_reshape": "点击一个网格显示其顶点，拖动共用边界上的顶点：相邻网格随之移动，然后预览。",
    "hint_merge": "点击选择两个或以上相邻网格，然后点“预览”。",
    "hint_reassign": "选择目标网格，再点击要调整的楼栋，然后点“预览”。",
    "hint_draft": "生成本社区的户数均衡草案，可拖动草案顶点调整，预览后采纳。",
    "make_draft": "生成草案", "draft_ratio": "最大/最小户数比",
    "target_grid": "目标网格", "preview": "预览", "reset": "重新开始",
    "save": "保存", "save_on": "生效日期（留空为立即生效）",
    "can_save": "检查通过，可以保存", "refused": "检查未通过，不能保存",
    "problems": "问题", "no_problems": "没有问题", "new_grids": "调整后的网格",
    "new_grid": "新网格", "grid_name": "网格名称", "responsible_body": "责任主体",
    "team_assign": "网格队伍分配", "member": "成员", "goes_to": "分配到",
    "keep_default": "按默认分配", "saved": "已保存，版本", "scheduled_for": "已排期，生效于",
    "selected": "已选择", "line_points": "分割线节点", "status_created": "新建",
    "status_changed": "边界调整", "status_touched": "楼栋变动", "buildings": "楼栋",
    "warning": "提醒", "m2": "平方米", "off_by": "相差", "preview_first": "请先预览",
    "pick_grid": "请先点击一个网格", "community_pick": "社区",
    "grid_seq": "网格", "no_draft": "尚未生成草案", "accept": "采纳草案",
    "team_rule": "2+5+N 队伍",
}
PROBLEM_CHECKS = {
    "inside_community": "超出社区范围", "overlap": "网格重叠", "gap": "网格间空隙",
    "building_in_one_grid": "楼栋不在唯一网格内", "balance": "户数超出150–500",
    "team": "队伍不足2+5+N",
}
TEXT.update(PLANNER)


def catalogue() -> dict[str, Any]:
    """Everything a page needs to show names: texts, roles, statuses, steps, SLA states."""
    return {
        "text": TEXT, "roles": ROLES, "status": dict(inc.STEPS_ZH), "sla": SLA,
        "actions": ACTIONS, "team_roles": TEAM_ROLES, "levels": LEVELS,
        "checks": PROBLEM_CHECKS, "run_kinds": RUN_KINDS, "run_status": RUN_STATUS,
        "methods": SITING_METHODS,
        "operations": OPERATIONS, "changes": CHANGES,
        # The state machine, for offering only the steps a case may take next.
        "transitions": [[f, t, a] for (f, t), a in inc.TRANSITIONS.items()],
    }


def t(key: str) -> str:
    """One text by key (the key itself if missing, so a gap shows instead of failing)."""
    return TEXT.get(key, key)
