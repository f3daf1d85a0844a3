using System.Security.Cryptography;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// <see cref="ImageAmender"/> (qemu-img amend for qcow2) with qemu as the oracle: after every amendment
/// <c>qemu-img check</c> finds nothing (no corruption, no leak), <c>qemu-img info</c> shows the new options, the guest
/// view is unchanged (<c>qemu-img compare</c> with a copy taken before, and <c>qemu-io read -P</c> of the patterns
/// written), and so is every internal snapshot (each reverted on copies of before and after, then compared). Refusals
/// are typed and leave the file byte for byte as it was.
/// </summary>
public sealed class ImageAmenderTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>The image, then the amendment (compat, lazy refcounts, refcount bits) and what qemu-img info must show after it.</summary>
    public static TheoryData<string, string?, bool?, int?> Cases() => new()
    {
        { "v3-zeros", "0.10", null, null },
        { "v3-zeros-snapshot", "0.10", null, null },
        { "v3-overlay-zeros", "0.10", null, null },
        { "v3-overlay-zeros-snapshot", "0.10", null, null },
        { "v3-overlay-zeros-512", "0.10", null, null },
        { "v2-snapshots-512", "1.1", null, null },
        { "v3-lazy", "0.10", null, null },
        { "v3-compressed-4k", "0.10", null, null },
        { "v2-snapshots", "1.1", null, null },
        { "v2-snapshots", "1.1", true, 64 },
        { "v2-plain", "1.1", null, 1 },
        { "v3-zeros-snapshot", null, null, 64 },
        { "v3-zeros-snapshot", null, null, 4 },
        { "v3-compressed-4k", null, null, 8 },
        { "v3-64bit", "0.10", null, 16 },
        { "v3-zeros", null, true, null },
        { "v3-lazy", null, false, null },
    };

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Amended_image_passes_qemu_check_and_reads_unchanged(string image, string? compat, bool? lazy, int? bits)
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        (string path, string[] patterns) = Make(image);
        string before = temp.Combine("before.qcow2");
        File.Copy(path, before);
        string[] snapshotsBefore = SnapshotNames(path);

        var options = new ImageAmendOptions { Compat = compat, LazyRefcounts = lazy, RefcountBits = bits };
        ImageAmendPlan plan = ImageAmender.Plan(path, options);
        Assert.NotEmpty(plan.Changes);
        ImageInfo info = ImageAmender.Amend(path, options);

        QemuOracle.AssertCheckClean(path);
        using (JsonDocument json = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "info", "-U", "--output=json", path)))
        {
            JsonElement data = json.RootElement.GetProperty("format-specific").GetProperty("data");
            string expectedCompat = compat ?? info.Qcow2!.Compat;
            Assert.Equal(expectedCompat, data.GetProperty("compat").GetString());
            Assert.Equal(expectedCompat, info.Qcow2!.Compat);
            if (bits is { } b)
            {
                Assert.Equal(b, data.GetProperty("refcount-bits").GetInt32());
            }

            bool expectedLazy = lazy ?? (expectedCompat == "1.1" && (image == "v3-lazy"));
            Assert.Equal(expectedLazy, data.TryGetProperty("lazy-refcounts", out JsonElement l) && l.GetBoolean());
            Assert.Equal(expectedLazy, info.Qcow2.LazyRefcounts);
        }

        QemuOracle.AssertInfoMatches(path);
        AssertSameGuestView(before, path);
        foreach (string pattern in patterns)
        {
            string io = ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-r", "-c", pattern, path);
            Assert.DoesNotContain("fail", io, StringComparison.OrdinalIgnoreCase);
        }

        // Every snapshot reads as before: reverted on a copy of each, then compared.
        Assert.Equal(snapshotsBefore, SnapshotNames(path));
        foreach (string snapshot in snapshotsBefore)
        {
            string a = temp.Combine($"a-{snapshot}.qcow2");
            string z = temp.Combine($"z-{snapshot}.qcow2");
            File.Copy(before, a);
            File.Copy(path, z);
            ExternalTool.RunChecked("qemu-img", "snapshot", "-a", snapshot, a);
            ExternalTool.RunChecked("qemu-img", "snapshot", "-a", snapshot, z);
            AssertSameGuestView(a, z);
        }

        // Amending again to the same options changes nothing.
        Assert.Empty(ImageAmender.Plan(path, options).Changes);
    }

    [SkippableFact]
    public void Downgrade_keeps_a_snapshot_whose_cluster_the_active_image_zeroed()
    {
        // qemu 7.2's amend writes zeros into such a cluster, which the snapshot still reads, and leaves an OFLAG_COPIED error.
        ExternalTool.Require("qemu-img");
        (string path, _) = Make("v3-zeros-snapshot");
        string theirs = temp.Combine("theirs.qcow2");
        File.Copy(path, theirs);
        ExternalTool.RunChecked("qemu-img", "amend", "-o", "compat=0.10", theirs);
        Assert.NotEqual(0, ExternalTool.Run("qemu-img", "check", theirs).ExitCode);

        ImageAmender.Amend(path, new ImageAmendOptions { Compat = "0.10" });
        QemuOracle.AssertCheckClean(path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "s1", path);
        Assert.DoesNotContain("fail", ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 1 0 64k", path), StringComparison.OrdinalIgnoreCase);
    }

    [SkippableFact]
    public void Impossible_amendments_are_refused_and_change_nothing()
    {
        ExternalTool.Require("qemu-img");
        (string Image, ImageAmendOptions Options, string ErrorId)[] cases =
        [
            ("v3-zeros-snapshot", new ImageAmendOptions { RefcountBits = 1 }, AmendErrorIds.AmendNotPossible),
            ("v2-plain", new ImageAmendOptions { LazyRefcounts = true }, AmendErrorIds.InvalidAmendOptions),
            ("v2-plain", new ImageAmendOptions { RefcountBits = 8 }, AmendErrorIds.InvalidAmendOptions),
            ("v3-64bit", new ImageAmendOptions { Compat = "0.10" }, AmendErrorIds.InvalidAmendOptions),
            ("v3-zeros", new ImageAmendOptions { Compat = "0.10", LazyRefcounts = true }, AmendErrorIds.InvalidAmendOptions),
            ("v3-zeros", new ImageAmendOptions { Compat = "2.0" }, AmendErrorIds.InvalidAmendOptions),
            ("v3-zeros", new ImageAmendOptions { RefcountBits = 3 }, AmendErrorIds.InvalidAmendOptions),
            ("v3-subclusters", new ImageAmendOptions { Compat = "0.10" }, AmendErrorIds.AmendNotPossible),
            ("v3-zstd-compressed", new ImageAmendOptions { Compat = "0.10" }, AmendErrorIds.AmendNotPossible),
            ("v3-bitmap", new ImageAmendOptions { Compat = "0.10" }, ImageErrorIds.BitmapsNotWritable),
            ("v3-resized-snapshot", new ImageAmendOptions { Compat = "0.10" }, AmendErrorIds.AmendNotPossible),
            ("raw", new ImageAmendOptions { Compat = "0.10" }, AmendErrorIds.AmendNotSupported),
        ];
        foreach ((string image, ImageAmendOptions options, string errorId) in cases)
        {
            (string path, _) = Make(image);
            byte[] hash = SHA256.HashData(File.ReadAllBytes(path));
            var planned = Assert.Throws<KvmStorageException>(() => ImageAmender.Plan(path, options));
            Assert.True(errorId == planned.ErrorId, $"{image} {options}: {planned.ErrorId} {planned.Message}");
            var e = Assert.Throws<KvmStorageException>(() => ImageAmender.Amend(path, options));
            Assert.Equal(errorId, e.ErrorId);
            Assert.Equal(hash, SHA256.HashData(File.ReadAllBytes(path)));
            foreach (string file in Directory.GetFiles(temp.Path))
            {
                File.Delete(file);
            }
        }
    }

    [SkippableFact]
    public void A_running_qemu_makes_the_amendment_wait_its_turn()
    {
        ExternalTool.Require("qemu-io");
        (string path, _) = Make("v3-zeros");
        using var qemu = new System.Diagnostics.Process
        {
            StartInfo = new System.Diagnostics.ProcessStartInfo("qemu-io", ["-f", "qcow2", path]) { RedirectStandardInput = true, RedirectStandardOutput = true },
        };
        qemu.Start();
        try
        {
            // qemu-io has the image open for writing once it answers a command.
            qemu.StandardInput.WriteLine("read 0 512");
            qemu.StandardOutput.ReadLine();
            var e = Assert.Throws<KvmStorageException>(() => ImageAmender.Amend(path, new ImageAmendOptions { Compat = "0.10" }));
            Assert.Equal(ImageErrorIds.ImageInUse, e.ErrorId);
        }
        finally
        {
            qemu.StandardInput.WriteLine("quit");
            qemu.WaitForExit();
        }
    }

    private static void AssertSameGuestView(string a, string b)
    {
        ExternalTool.Result compare = ExternalTool.Run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b);
        Assert.True(compare.ExitCode == 0, $"qemu-img compare {a} {b}: {compare.Stdout}{compare.Stderr}");
    }

    private static string[] SnapshotNames(string path) =>
        [.. ImageInspector.Inspect(path, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true }).Snapshots.Select(s => s.Name)];

    /// <summary>The named image made by qemu-img and qemu-io, and the qemu-io reads that prove its data.</summary>
    private (string Path, string[] Patterns) Make(string name)
    {
        string Q(string file) => temp.Combine(file);
        void Create(string file, string options, string size = "16M", params string[] extra) =>
            ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", .. extra, .. options.Length == 0 ? Array.Empty<string>() : ["-o", options], file, size]);
        void Io(string file, params string[] commands) =>
            ExternalTool.RunChecked("qemu-io", ["-f", "qcow2", .. commands.SelectMany(c => new[] { "-c", c }), file]);
        void Snapshot(string file, string snapshot) => ExternalTool.RunChecked("qemu-img", "snapshot", "-c", snapshot, file);
        string path = Q("image.qcow2");
        switch (name)
        {
            case "v3-zeros":
                Create(path, "compat=1.1");
                Io(path, "write -P 1 0 128k", "write -z 1M 64k", "write -z -u 2M 64k", "write -P 2 3M 64k", "write -z 3M 64k", "write -P 3 5M 4k");
                return (path, ["read -P 1 0 128k", "read -P 0 1M 64k", "read -P 0 3M 64k", "read -P 3 5M 4k"]);
            case "v3-zeros-snapshot":
                Create(path, "compat=1.1");
                Io(path, "write -P 1 0 128k", "write -z 1M 64k", "write -z -u 2M 64k", "write -P 4 4M 64k");
                Snapshot(path, "s1");
                Io(path, "write -z 0 64k", "write -P 5 6M 64k");
                Snapshot(path, "s2");
                Io(path, "write -z 4M 64k");
                return (path, ["read -P 0 0 64k", "read -P 1 64k 64k", "read -P 0 4M 64k", "read -P 5 6M 64k"]);
            case "v3-overlay-zeros":
            case "v3-overlay-zeros-snapshot":
                Create(Q("base.qcow2"), "compat=1.1");
                Io(Q("base.qcow2"), "write -P 9 0 8M");
                Create(path, "compat=1.1", "16M", "-b", "base.qcow2", "-F", "qcow2");
                Io(path, "write -P 1 0 64k", "write -z 1M 192k", "write -z -u 2M 64k", "write -P 2 3M 64k", "write -z 3M 64k");
                if (name.EndsWith("snapshot", StringComparison.Ordinal))
                {
                    Snapshot(path, "s1");
                    Io(path, "write -z 4M 64k", "write -z 0 64k");
                }

                return (path, ["read -P 0 1M 192k", "read -P 9 1216k 64k", "read -P 0 3M 64k", "read -P 9 5M 1M"]);
            case "v3-overlay-zeros-512":
                // 8,192 new clusters of zeros need more refcount blocks than the table of one 512-byte cluster holds: it moves.
                Create(Q("base.qcow2"), "compat=1.1");
                Io(Q("base.qcow2"), "write -P 9 0 8M");
                Create(path, "compat=1.1,cluster_size=512", "16M", "-b", "base.qcow2", "-F", "qcow2");
                Io(path, "write -z 0 2M", "write -P 1 3M 64k");
                Snapshot(path, "s1");
                Io(path, "write -z 2M 2M");
                return (path, ["read -P 0 0 4M", "read -P 9 4M 4M"]);
            case "v2-snapshots-512":
                Create(path, "compat=0.10,cluster_size=512");
                Io(path, "write -P 1 0 1M");
                for (int i = 0; i < 40; i++)
                {
                    Snapshot(path, $"snapshot-with-a-long-name-{i:D3}");
                }

                return (path, ["read -P 1 0 1M"]);
            case "v3-lazy":
                Create(path, "compat=1.1,lazy_refcounts=on");
                Io(path, "write -P 1 0 1M", "write -z 2M 64k");
                return (path, ["read -P 1 0 1M", "read -P 0 2M 64k"]);
            case "v3-compressed-4k":
                Create(path, "compat=1.1,cluster_size=4096");
                Io(path, "write -c -P 1 0 64k", "write -P 2 1M 12k", "write -z 2M 8k");
                Snapshot(path, "s1");
                Io(path, "write -c -P 3 128k 8k", "write -P 3 0 8k");
                return (path, ["read -P 3 0 8k", "read -P 1 8k 56k", "read -P 2 1M 12k"]);
            case "v3-64bit":
                Create(path, "compat=1.1,refcount_bits=64");
                Io(path, "write -P 1 0 256k", "write -z 1M 64k");
                return (path, ["read -P 1 0 256k"]);
            case "v2-snapshots":
                Create(path, "compat=0.10");
                Io(path, "write -P 1 0 128k");
                Snapshot(path, "s1");
                Io(path, "write -P 2 64k 128k");
                Snapshot(path, "s2");
                Io(path, "write -P 3 8M 1M");
                return (path, ["read -P 1 0 64k", "read -P 2 64k 128k", "read -P 3 8M 1M"]);
            case "v2-plain":
                Create(path, "compat=0.10");
                Io(path, "write -P 1 0 3M");
                return (path, ["read -P 1 0 3M"]);
            case "v3-subclusters":
                Create(path, "extended_l2=on,cluster_size=64k");
                Io(path, "write -P 1 0 4k");
                return (path, []);
            case "v3-zstd-compressed":
                Create(path, "compression_type=zstd");
                Io(path, "write -c -P 1 0 64k");
                return (path, []);
            case "v3-bitmap":
                Create(path, "compat=1.1");
                ExternalTool.RunChecked("qemu-img", "bitmap", "--add", path, "b0");
                return (path, []);
            case "v3-resized-snapshot":
                Create(path, "compat=1.1");
                Snapshot(path, "s1");
                ExternalTool.RunChecked("qemu-img", "resize", "-q", path, "32M");
                return (path, []);
            case "raw":
                path = Q("image.raw");
                File.WriteAllBytes(path, new byte[65536]);
                return (path, []);
            default:
                throw new ArgumentOutOfRangeException(nameof(name));
        }
    }
}
