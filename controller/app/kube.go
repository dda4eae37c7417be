package app

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// kubeWriter writes Service status and Events through the API server; it is
// the reconcile.Writer of a real controller.
type kubeWriter struct {
	client      kubernetes.Interface
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
}

func newKubeWriter(client kubernetes.Interface) *kubeWriter {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})

	return &kubeWriter{
		client:      client,
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "lb-controller"}),
	}
}

func (w *kubeWriter) UpdateServiceStatus(ctx context.Context, svc *corev1.Service) error {
	if _, err := w.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}

	return nil
}

func (w *kubeWriter) Event(svc *corev1.Service, eventType, reason, message string) {
	w.recorder.Event(svc, eventType, reason, message)
}

func (w *kubeWriter) stop() { w.broadcaster.Shutdown() }
