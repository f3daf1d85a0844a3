using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Optimize-Volume: gives back the space of data that reads as zeros; -Compact rewrites the image.</summary>
[Cmdlet(VerbsCommon.Optimize, "Volume", SupportsShouldProcess = true)]
[OutputType(typeof(ImageOptimizeResult))]
public sealed class OptimizeVolumeCommand : KvmCmdlet
{
    /// <summary>The volume: an object from Get-Volume or a path to an image file.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    public VolumeReference[] Volume { get; set; } = [];

    /// <summary>Also rewrite the image into a fresh file without holes in its layout, replacing it atomically.</summary>
    [Parameter]
    public SwitchParameter Compact { get; set; }

    protected override void ProcessRecord()
    {
        foreach (VolumeReference volume in Volume)
        {
            RunForItem(volume, () =>
            {
                VolumeAction<ImageOptimizeResult> optimize = Volumes.Optimize(SpecOf(volume), Compact);
                if (ShouldProcess(optimize.Target, optimize.Description))
                {
                    WriteObject(RunWithProgress("Optimize-Volume", $"Optimizing {System.IO.Path.GetFileName(optimize.Target)}", optimize.Run));
                }
            });
        }
    }
}
