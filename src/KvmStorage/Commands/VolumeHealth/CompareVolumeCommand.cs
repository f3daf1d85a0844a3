using System.Management.Automation;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Compare-Volume: compares what a guest sees in two images, like <c>qemu-img compare</c>.</summary>
[Cmdlet(VerbsData.Compare, "Volume")]
[OutputType(typeof(ImageCompareResult))]
public sealed class CompareVolumeCommand : KvmCmdlet
{
    /// <summary>The image compared against: a volume object or a path.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNull]
    public VolumeReference ReferenceVolume { get; set; } = null!;

    /// <summary>The image(s) compared with the reference: volume objects or paths, also from the pipeline.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipeline = true)]
    [ValidateNotNull]
    public VolumeReference[] DifferenceVolume { get; set; } = [];

    /// <summary>Images of different sizes differ, even when the extra part reads as zeros.</summary>
    [Parameter]
    public SwitchParameter Strict { get; set; }

    protected override void ProcessRecord()
    {
        foreach (VolumeReference difference in DifferenceVolume)
        {
            RunForItem(difference, () =>
            {
                string reference = VolumePathResolver.Resolve(this, ReferenceVolume);
                string other = VolumePathResolver.Resolve(this, difference);
                var options = new BlockOpenOptions { HostPathResolver = KvmHost.Paths.IsSystemRoot ? null : KvmHost.Paths.Resolve };
                ImageCompareResult result = RunWithProgress(
                    "Compare-Volume",
                    $"Comparing {System.IO.Path.GetFileName(reference)} with {System.IO.Path.GetFileName(other)}",
                    (progress, token) => ImageComparer.Compare(reference, other, Strict, options, progress, token));
                WriteObject(result);
            });
        }
    }
}
