using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

public sealed class ImageCreatorTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, uint, Preallocation, ulong> Qcow2Matrix()
    {
        var data = new TheoryData<string, uint, Preallocation, ulong>();
        foreach (string compat in new[] { "1.1", "0.10" })
        {
            foreach (uint cluster in new uint[] { 512, 4096, 65536, 2 * 1024 * 1024 })
            {
                foreach (Preallocation mode in Enum.GetValues<Preallocation>())
                {
                    ulong size = mode == Preallocation.Full ? 16 * MiB : cluster == 512 ? 64 * MiB : 1024 * MiB;
                    data.Add(compat, cluster, mode, size);
                }
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Qcow2Matrix))]
    public void Qcow2_matrix_is_clean_and_reported_like_qemu(string compat, uint clusterSize, Preallocation mode, ulong size)
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("img.qcow2");
        ImageInfo info = ImageCreator.Create(path, new ImageCreateOptions { Format = ImageFormat.Qcow2, Compat = compat, ClusterSize = clusterSize, Preallocation = mode, VirtualSize = size });
        Assert.Equal(size, info.VirtualSize);
        Assert.Equal(clusterSize, info.ClusterSize);
        Assert.Equal(compat, info.Qcow2!.Compat);
        QemuOracle.AssertCheckClean(path);
        QemuOracle.AssertInfoMatches(path);
        if (mode != Preallocation.Off)
        {
            // Every guest cluster is mapped to a host offset; v3 metadata preallocation also sets the zero flag.
            string map = ExternalTool.RunChecked("qemu-img", "map", "--output=json", path);
            using var json = System.Text.Json.JsonDocument.Parse(map);
            foreach (System.Text.Json.JsonElement extent in json.RootElement.EnumerateArray())
            {
                Assert.True(extent.TryGetProperty("offset", out _), map);
                Assert.True(extent.GetProperty("zero").GetBoolean() || mode != Preallocation.Metadata || compat != "1.1", map);
            }
        }
    }

    [SkippableTheory]
    [InlineData(1, false)]
    [InlineData(2, true)]
    [InlineData(4, false)]
    [InlineData(8, true)]
    [InlineData(32, false)]
    [InlineData(64, true)]
    public void Qcow2_refcount_widths_and_lazy_refcounts(int refcountBits, bool lazy)
    {
        ExternalTool.Require("qemu-img");
        foreach (uint cluster in new uint[] { 512, 65536 })
        {
            foreach (Preallocation mode in new[] { Preallocation.Off, Preallocation.Metadata })
            {
                string path = temp.Combine($"r{refcountBits}-{cluster}-{mode}.qcow2");
                ImageCreator.Create(path, new ImageCreateOptions { RefcountBits = refcountBits, LazyRefcounts = lazy, ClusterSize = cluster, Preallocation = mode, VirtualSize = 32 * MiB });
                QemuOracle.AssertCheckClean(path);
                ImageInfo info = QemuOracle.AssertInfoMatches(path);
                Assert.Equal(refcountBits, info.Qcow2!.RefcountBits);
                Assert.Equal(lazy, info.Qcow2.LazyRefcounts);
            }
        }
    }

    [SkippableTheory]
    [InlineData("1.1", 65536u, 0UL)]
    [InlineData("1.1", 65536u, 1024UL * 1024 * 1024)]
    [InlineData("1.1", 65536u, 10UL * 1024 * 1024 * 1024 * 1024)]
    [InlineData("0.10", 65536u, 1024UL * 1024 * 1024)]
    [InlineData("1.1", 512u, 1024UL * 1024)]
    [InlineData("1.1", 4096u, 1024UL * 1024 * 1024)]
    [InlineData("1.1", 8192u, 1000UL)]
    [InlineData("1.1", 2097152u, 1024UL * 1024 * 1024 * 1024)]
    public void Qcow2_is_byte_identical_to_qemu_img_create(string compat, uint clusterSize, ulong size)
    {
        ExternalTool.Require("qemu-img");
        string ours = temp.Combine("ours.qcow2");
        string theirs = temp.Combine("theirs.qcow2");
        ImageCreator.Create(ours, new ImageCreateOptions { Compat = compat, ClusterSize = clusterSize, VirtualSize = size });
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", $"compat={compat},cluster_size={clusterSize}", theirs, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(theirs), File.ReadAllBytes(ours));
    }

    [SkippableTheory]
    [InlineData("1.1", 65536u, true)]
    [InlineData("1.1", 65536u, false)]
    [InlineData("0.10", 65536u, true)]
    [InlineData("1.1", 512u, true)]
    public void Qcow2_with_backing_is_byte_identical_to_qemu_img_create(string compat, uint clusterSize, bool relative)
    {
        ExternalTool.Require("qemu-img");
        string basePath = temp.Combine("base.qcow2");
        ImageCreator.Create(basePath, new ImageCreateOptions { VirtualSize = 64 * MiB });
        string backing = relative ? "base.qcow2" : basePath;
        string ours = temp.Combine("ours.qcow2");
        string theirs = temp.Combine("theirs.qcow2");
        ImageCreator.Create(ours, new ImageCreateOptions { Compat = compat, ClusterSize = clusterSize, BackingFile = backing });
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", $"compat={compat},cluster_size={clusterSize}", "-b", backing, "-F", "qcow2", theirs);
        Assert.Equal(File.ReadAllBytes(theirs), File.ReadAllBytes(ours));
    }

    [SkippableTheory]
    [InlineData(ImageFormat.Qcow2, true)]
    [InlineData(ImageFormat.Qcow2, false)]
    [InlineData(ImageFormat.Raw, true)]
    public void Backing_file_is_recorded_as_given_with_its_format(ImageFormat backingFormat, bool relative)
    {
        ExternalTool.Require("qemu-img");
        Directory.CreateDirectory(temp.Combine("base"));
        string basePath = temp.Combine("base", "disk.img");
        ImageCreator.Create(basePath, new ImageCreateOptions { Format = backingFormat, VirtualSize = 48 * MiB });
        string backing = relative ? "base/disk.img" : basePath;
        string top = temp.Combine("top.qcow2");
        ImageInfo info = ImageCreator.Create(top, new ImageCreateOptions { BackingFile = backing });
        Assert.Equal(backing, info.BackingFile);
        Assert.Equal(backingFormat.ToQemuName(), info.BackingFormat);
        Assert.Equal(48 * MiB, info.VirtualSize);
        Assert.Single(info.BackingChain);
        Assert.Equal(backingFormat, info.BackingChain[0].ImageFormat);
        QemuOracle.AssertCheckClean(top);
        QemuOracle.AssertInfoMatches(top);

        string second = temp.Combine("second.qcow2");
        ImageCreator.Create(second, new ImageCreateOptions { BackingFile = "top.qcow2", BackingFormat = ImageFormat.Qcow2, VirtualSize = 96 * MiB });
        ImageInfo chained = QemuOracle.AssertInfoMatches(second);
        Assert.Equal(2, chained.BackingChain.Count);
        Assert.Equal(96 * MiB, chained.VirtualSize);
    }

    [SkippableTheory]
    [InlineData(Preallocation.Off)]
    [InlineData(Preallocation.Falloc)]
    [InlineData(Preallocation.Full)]
    public void Raw_images_match_qemu(Preallocation mode)
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("disk.raw");
        ImageInfo info = ImageCreator.Create(path, new ImageCreateOptions { Format = ImageFormat.Raw, Preallocation = mode, VirtualSize = (16 * MiB) + 1000 });
        Assert.Equal((16 * MiB) + 1024, info.VirtualSize);
        Assert.Equal((16 * MiB) + 1024, (ulong)new FileInfo(path).Length);
        if (mode != Preallocation.Off)
        {
            Assert.True(info.ActualSize >= 16 * MiB);
        }

        QemuOracle.AssertInfoMatches(path);
    }

    [Fact]
    public void Existing_file_is_never_overwritten()
    {
        string path = temp.Combine("exists.qcow2");
        File.WriteAllText(path, "keep me");
        var error = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB }));
        Assert.Equal(ErrorKind.AlreadyExists, error.Kind);
        Assert.Equal(ImageErrorIds.ImageExists, error.ErrorId);
        Assert.Equal("keep me", File.ReadAllText(path));
    }

    [Fact]
    public void Mode_is_0600_by_default_and_exact_when_given()
    {
        string path = temp.Combine("mode.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        string other = temp.Combine("mode.raw");
        UnixFileMode wide = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
        ImageCreator.Create(other, new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = MiB, Mode = wide });
        Assert.Equal(wide, File.GetUnixFileMode(other));
    }

    [Theory]
    [InlineData(ImageFormat.Qcow2)]
    [InlineData(ImageFormat.Raw)]
    public void Cancelled_full_preallocation_deletes_the_partial_file(ImageFormat format)
    {
        string path = temp.Combine("cancel.img");
        using var cts = new CancellationTokenSource();
        var progress = new SynchronousProgress(p =>
        {
            if (p.BytesCompleted >= 4 * MiB)
            {
                cts.Cancel();
            }
        });
        Assert.ThrowsAny<OperationCanceledException>(() =>
            ImageCreator.Create(path, new ImageCreateOptions { Format = format, Preallocation = Preallocation.Full, VirtualSize = 64 * MiB }, progress, cts.Token));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Full_preallocation_reports_progress_to_completion()
    {
        string path = temp.Combine("progress.qcow2");
        var reports = new List<ImageProgress>();
        ImageCreator.Create(path, new ImageCreateOptions { Preallocation = Preallocation.Full, VirtualSize = 8 * MiB }, new SynchronousProgress(reports.Add));
        Assert.NotEmpty(reports);
        Assert.Equal(8 * MiB, reports[^1].BytesCompleted);
        Assert.Equal(100, reports[^1].Percent);
    }

    [Theory]
    [InlineData("0.10", 16, true, Preallocation.Off, 65536u)]
    [InlineData("0.10", 8, false, Preallocation.Off, 65536u)]
    [InlineData("1.1", 3, false, Preallocation.Off, 65536u)]
    [InlineData("1.1", 16, false, Preallocation.Off, 1000u)]
    [InlineData("1.1", 16, false, Preallocation.Off, 4u * 1024 * 1024)]
    [InlineData("2.0", 16, false, Preallocation.Off, 65536u)]
    public void Invalid_options_are_refused_and_leave_no_file(string compat, int refcountBits, bool lazy, Preallocation mode, uint cluster)
    {
        string path = temp.Combine("bad.qcow2");
        var error = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(path, new ImageCreateOptions
        {
            Compat = compat, RefcountBits = refcountBits, LazyRefcounts = lazy, Preallocation = mode, ClusterSize = cluster, VirtualSize = MiB,
        }));
        Assert.Equal(ErrorKind.InvalidArgument, error.Kind);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Missing_backing_file_and_backing_with_preallocation_are_refused()
    {
        var missing = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(temp.Combine("a.qcow2"), new ImageCreateOptions { BackingFile = "nope.qcow2" }));
        Assert.Equal(ErrorKind.NotFound, missing.Kind);
        Assert.Equal(ImageErrorIds.BackingFileNotFound, missing.ErrorId);
        ImageCreator.Create(temp.Combine("base.qcow2"), new ImageCreateOptions { VirtualSize = MiB });
        var prealloc = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(temp.Combine("b.qcow2"), new ImageCreateOptions { BackingFile = "base.qcow2", Preallocation = Preallocation.Metadata }));
        Assert.Equal(ImageErrorIds.InvalidCreateOptions, prealloc.ErrorId);
        var noSize = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(temp.Combine("c.qcow2"), new ImageCreateOptions()));
        Assert.Equal(ImageErrorIds.InvalidImageSize, noSize.ErrorId);
        Assert.False(File.Exists(temp.Combine("a.qcow2")) || File.Exists(temp.Combine("b.qcow2")) || File.Exists(temp.Combine("c.qcow2")));
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; tests need the callback inline.</summary>
    private sealed class SynchronousProgress(Action<ImageProgress> report) : IProgress<ImageProgress>
    {
        public void Report(ImageProgress value) => report(value);
    }
}
