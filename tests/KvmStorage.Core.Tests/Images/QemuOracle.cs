using System.Text.Json;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>qemu-img as the oracle: info compared field by field, check asserted clean.</summary>
internal static class QemuOracle
{
    public static void AssertCheckClean(string path)
    {
        ExternalTool.Result result = ExternalTool.Run("qemu-img", "check", "--output=json", path);
        Assert.True(result.ExitCode == 0, $"qemu-img check {path} exited {result.ExitCode}: {result.Stdout}{result.Stderr}");
        using JsonDocument json = JsonDocument.Parse(result.Stdout);
        Assert.Equal(0, json.RootElement.GetProperty("check-errors").GetInt32());
        if (json.RootElement.TryGetProperty("leaks", out JsonElement leaks))
        {
            Assert.Equal(0, leaks.GetInt32());
        }

        if (json.RootElement.TryGetProperty("corruptions", out JsonElement corruptions))
        {
            Assert.Equal(0, corruptions.GetInt32());
        }
    }

    /// <summary>Asserts that our inspector reports what <c>qemu-img info --output=json</c> reports.</summary>
    public static ImageInfo AssertInfoMatches(string path, bool forceShare = true)
    {
        string stdout = ExternalTool.RunChecked("qemu-img", "info", "-U", "--output=json", path);
        ImageInfo ours = ImageInspector.Inspect(path, new ImageInspectOptions { ForceShare = forceShare });
        using JsonDocument json = JsonDocument.Parse(stdout);
        JsonElement q = json.RootElement;
        Assert.Equal(q.GetProperty("virtual-size").GetUInt64(), ours.VirtualSize);
        Assert.Equal(q.GetProperty("format").GetString(), ours.Format);
        Assert.Equal(q.GetProperty("actual-size").GetUInt64(), ours.ActualSize);
        Assert.Equal(Optional(q, "cluster-size")?.GetUInt32(), ours.ClusterSize);
        Assert.Equal(Optional(q, "dirty-flag")?.GetBoolean() ?? false, ours.DirtyFlag);
        Assert.Equal(Optional(q, "backing-filename")?.GetString(), ours.BackingFile);
        Assert.Equal(Optional(q, "full-backing-filename")?.GetString(), ours.FullBackingFile);
        Assert.Equal(Optional(q, "backing-filename-format")?.GetString(), ours.BackingFormat);
        if (q.TryGetProperty("format-specific", out JsonElement specific) && specific.GetProperty("type").GetString() == "qcow2")
        {
            JsonElement data = specific.GetProperty("data");
            Assert.NotNull(ours.Qcow2);
            Assert.Equal(data.GetProperty("compat").GetString(), ours.Qcow2!.Compat);
            Assert.Equal(data.GetProperty("compression-type").GetString(), ours.Qcow2.CompressionType);
            Assert.Equal(Optional(data, "lazy-refcounts")?.GetBoolean() ?? false, ours.Qcow2.LazyRefcounts);
            Assert.Equal(data.GetProperty("refcount-bits").GetInt32(), ours.Qcow2.RefcountBits);
            Assert.Equal(Optional(data, "corrupt")?.GetBoolean() ?? false, ours.Qcow2.Corrupt);
            Assert.Equal(Optional(data, "extended-l2")?.GetBoolean() ?? false, ours.Qcow2.ExtendedL2);
            Assert.Equal(Optional(data, "data-file")?.GetString(), ours.Qcow2.DataFile);
            Assert.Equal(Optional(data, "encrypt")?.GetProperty("format").GetString(), ours.Encryption);
        }
        else
        {
            Assert.Null(ours.Qcow2);
        }

        JsonElement[] snapshots = Optional(q, "snapshots") is { } s ? [.. s.EnumerateArray()] : [];
        Assert.Equal(snapshots.Length, ours.Snapshots.Count);
        for (int i = 0; i < snapshots.Length; i++)
        {
            JsonElement e = snapshots[i];
            SnapshotInfo o = ours.Snapshots[i];
            Assert.Equal(e.GetProperty("id").GetString(), o.Id);
            Assert.Equal(e.GetProperty("name").GetString(), o.Name);
            Assert.Equal(e.GetProperty("vm-state-size").GetUInt64(), o.VmStateSize);
            Assert.Equal(e.GetProperty("date-sec").GetUInt32(), o.DateSeconds);
            Assert.Equal(e.GetProperty("date-nsec").GetUInt32(), o.DateNanoseconds);
            Assert.Equal(e.GetProperty("vm-clock-sec").GetUInt64(), o.VmClockNanoseconds / 1_000_000_000);
            Assert.Equal(e.GetProperty("vm-clock-nsec").GetUInt64(), o.VmClockNanoseconds % 1_000_000_000);
            Assert.Equal(Optional(e, "icount")?.GetInt64(), o.Icount);
        }

        return ours;
    }

    private static JsonElement? Optional(JsonElement element, string name) =>
        element.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value : null;
}
