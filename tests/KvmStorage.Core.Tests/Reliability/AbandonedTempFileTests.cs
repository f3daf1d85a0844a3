using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.IO;
using KvmStorage.Core.Tests.Convert;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Reliability;

/// <summary>
/// Found by the crash harness (tests/Reliability, classes ConvertVolumeCompress, ConvertVolumeRawReplace and
/// OptimizeVolumeCompact): a SIGKILLed conversion or compaction left its hidden temporary in the pool for good,
/// since only New-Volume removed abandoned temporaries. Every writer of a temporary now marks it alive with the
/// temp flock, renames it while still holding that lock, and removes the abandoned ones of its folder first.
/// </summary>
public sealed class AbandonedTempFileTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Convert_removes_abandoned_temporaries_leaves_live_ones_and_locks_its_own()
    {
        string source = ImageConverterTests.MakeSampleRaw(temp.Combine("source.raw"));
        string abandoned = MakeAbandoned("old.qcow2");
        string live = temp.Combine(AtomicFile.TempPrefix + "busy.qcow2.12345678");
        using FileStream liveStream = AtomicFile.CreateTemp(live, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var probe = new TempProbe(temp.Path, "out.qcow2");

        using (var reader = new RawFileBlockReader(source))
        {
            ImageConverter.Convert(reader, temp.Combine("out.qcow2"), new ConvertOptions(), probe, CancellationToken.None);
        }

        Assert.False(File.Exists(abandoned), "the abandoned temporary is still there");
        Assert.True(File.Exists(live), "a temporary whose writer is alive was removed");
        Assert.True(probe.Seen > 0, "progress was reported while no temporary existed");
        Assert.Equal(0, probe.Unlocked);
        Assert.Single(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
    }

    [SkippableFact]
    public void Compaction_removes_abandoned_temporaries_and_writes_a_locked_owner_only_temporary()
    {
        ExternalTool.Require("qemu-io");
        string image = temp.Combine("opt.qcow2");
        ImageCreator.Create(image, new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = 16 * 1024 * 1024 });
        File.SetUnixFileMode(image, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x11 0 4M", "-c", "write -P 0 4M 4M", image);
        string abandoned = MakeAbandoned("opt.qcow2");
        var probe = new TempProbe(temp.Path, "opt.qcow2");

        ImageOptimizer.Optimize(image, compact: true, probe);

        Assert.False(File.Exists(abandoned), "the abandoned temporary is still there");
        Assert.True(probe.Seen > 0, "no progress was reported while the temporary existed");
        Assert.Equal(0, probe.Unlocked);
        Assert.Equal(0, probe.ReadableByOthers);
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));

        // The finished image keeps the original's mode.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, File.GetUnixFileMode(image));
        ExternalTool.RunChecked("qemu-io", "-c", "read -P 0x11 0 4M", "-c", "read -P 0 4M 12M", image);
    }

    [Fact]
    public void A_reader_opens_a_file_whose_writer_still_holds_it_after_the_rename()
    {
        // The race the concurrency test met: a lister opened a new volume in the instant between the writer's rename
        // and its close, and .NET's shared flock met the writer's exclusive one ("being used by another process").
        string final = temp.Combine("new.qcow2");
        string tempFile = AtomicFile.TempPathFor(final);
        using (FileStream writer = AtomicFile.CreateTemp(tempFile, UnixFileMode.UserRead | UnixFileMode.UserWrite))
        {
            writer.Write(new byte[4096]);
            writer.Flush(flushToDisk: true);
            Assert.True(AtomicFile.IsWriterAlive(tempFile), "a live writer's temporary looks abandoned");
            Assert.Equal(0, AtomicFile.RemoveAbandonedTempFiles(temp.Path));
            AtomicFile.MoveNoReplace(tempFile, final);

            using var reader = new FileStream(final, FileMode.Open, FileAccess.Read, FileShare.Read);
            Assert.Equal(4096, reader.Length);
        }

        // A process another test starts at this moment holds a copy of every descriptor between its fork and its exec
        // (close-on-exec closes them only at the exec), and the lock with them: give such a copy a moment to go. A lock
        // that really outlived the stream stays.
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (AtomicFile.IsWriterAlive(final) && waited.Elapsed < TimeSpan.FromSeconds(5))
        {
            Thread.Sleep(10);
        }

        Assert.False(AtomicFile.IsWriterAlive(final), "the lock outlived the writer's stream");
    }

    [Fact]
    public async Task A_cleaner_never_takes_a_temporary_its_writer_is_creating()
    {
        // The race CI met: New-Volume's cleaner opened and locked another writer's temporary in the instant between
        // that writer's create and its lock, deleted it, and the writer's rename failed with "Could not find file".
        // flock belongs to the open file description, so threads in one process race exactly as processes do.
        const int writers = 4;
        const int filesPerWriter = 2000;
        using var stop = new CancellationTokenSource();
        var cleaner = Task.Run(() =>
        {
            int removed = 0;
            while (!stop.IsCancellationRequested)
            {
                removed += AtomicFile.RemoveAbandonedTempFiles(temp.Path);
            }

            return removed;
        });

        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, writers, new ParallelOptions { MaxDegreeOfParallelism = writers }, w =>
        {
            for (int i = 0; i < filesPerWriter; i++)
            {
                string final = temp.Combine($"w{w}-{i}.img");
                string tempFile = AtomicFile.TempPathFor(final);
                try
                {
                    using FileStream stream = AtomicFile.CreateTemp(tempFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                    stream.Write(new byte[512]);
                    AtomicFile.MoveNoReplace(tempFile, final);
                }
                catch (IOException e)
                {
                    failures.Add($"{final}: {e.Message}");
                }
            }
        });
        stop.Cancel();
        // The cleaner may still take a file in the instant before its writer locks it; the writer then makes another.
        await cleaner;

        Assert.Empty(failures);
        Assert.Equal(writers * filesPerWriter, Directory.GetFiles(temp.Path, "w*.img").Length);
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
    }

    [Fact]
    public void A_cleaner_still_removes_the_temporaries_of_dead_writers()
    {
        string abandoned = MakeAbandoned("dead.qcow2");
        string live = AtomicFile.TempPathFor(temp.Combine("busy.qcow2"));
        using FileStream liveStream = AtomicFile.CreateTemp(live, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        Assert.Equal(1, AtomicFile.RemoveAbandonedTempFiles(temp.Path));
        Assert.False(File.Exists(abandoned));
        Assert.True(File.Exists(live));
        Assert.Throws<IOException>(() => AtomicFile.CreateTemp(live, UnixFileMode.UserRead | UnixFileMode.UserWrite));
    }

    private string MakeAbandoned(string name)
    {
        // What a SIGKILLed writer leaves: a temporary nobody holds a lock on.
        string file = temp.Combine(AtomicFile.TempPrefix + name + ".0badc0de");
        File.WriteAllBytes(file, new byte[65536]);
        return file;
    }

    /// <summary>At each progress report, looks at the writer's temporaries: locked, and not readable by others.</summary>
    private sealed class TempProbe(string folder, string name) : IProgress<ImageProgress>
    {
        public int Seen { get; private set; }

        public int Unlocked { get; private set; }

        public int ReadableByOthers { get; private set; }

        public void Report(ImageProgress value)
        {
            foreach (string file in Directory.GetFiles(folder, AtomicFile.TempPrefix + name + ".*"))
            {
                if (file.EndsWith(".0badc0de", StringComparison.Ordinal))
                {
                    continue;
                }

                Seen++;
                if ((File.GetUnixFileMode(file) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead)) != 0)
                {
                    ReadableByOthers++;
                }

                // Locked by its writer is what a cleaner must see.
                if (!AtomicFile.IsWriterAlive(file))
                {
                    Unlocked++;
                }
            }
        }
    }
}
