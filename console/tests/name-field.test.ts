import { mount } from "@vue/test-utils";
import { describe, expect, it } from "vitest";
import { defineComponent, ref } from "vue";
import NameField from "../src/components/NameField.vue";

describe("a name field", () => {
  it("suggests its own names, passes attributes to the input and binds its value", async () => {
    const chosen = ref("");
    const Form = defineComponent({
      components: { NameField },
      setup: () => ({ chosen }),
      template: `<form>
        <NameField v-model="chosen" label="Model" :names="['gemma3:270m', 'qwen3:0.6b']" required data-testid="first" />
        <NameField v-model="chosen" label="Other" :names="['llama3.2']" />
      </form>`,
    });
    const wrapper = mount(Form);
    const [first, second] = wrapper.findAll("label");
    expect(first.classes()).toEqual(["grow"]);
    expect(first.text()).toContain("Model");
    const input = first.get("input");
    expect(input.attributes("data-testid")).toBe("first");
    expect(input.attributes("required")).toBeDefined();
    // Each input names its own datalist, so the suggestions are not the other field's.
    const list = first.get(`datalist#${CSS.escape(input.attributes("list")!)}`);
    expect(list.findAll("option").map((o) => o.attributes("value"))).toEqual(["gemma3:270m", "qwen3:0.6b"]);
    expect(second.get("input").attributes("list")).not.toBe(input.attributes("list"));
    await input.setValue("qwen3:0.6b");
    expect(chosen.value).toBe("qwen3:0.6b");
    wrapper.unmount();
  });
});
